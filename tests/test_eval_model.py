"""eval_model.py: loading by name, adapters, clear errors, scripted chat and the automatic tests.

    pytest tests/test_eval_model.py
"""
import io
import json
import subprocess
import sys

import pytest

import eval_model
import evaluation.answer_tests
from chat.engine import ChatEngine
from apps.terminal import PROMPTS, auto_prompts, auto_test
from evaluation.answer_tests import first_user
from factories import REPO as ROOT, make_adapter, make_checkpoint, run_main, write_chat, write_jsonl

MELODY = {"name": "Melody", "creator": "Ada Lab", "creator_zh": "Ada 实验室"}


@pytest.fixture
def out(tmp_path):
    """out/ with a tiny full-SFT checkpoint and an adapter trained (recorded) on it."""
    out = tmp_path / "out"
    base = make_checkpoint(out / "full_sft_64.pth", meta={"step": 5})
    val = write_chat(tmp_path / "val.jsonl", n=1)
    make_adapter(out / "lora" / "lora_music_64.pth", base,
                 meta={"step": 2, "val_path": str(val), "train_config": {"val_data": None}})
    return out


def run(argv, capsys, stdin=None, monkeypatch=None):
    return run_main(eval_model.main, argv, capsys, stdin, monkeypatch)


def test_prompt_answers_and_exits(out, capsys):
    code, stdout, err = run(["--out_dir", str(out), "--prompt", "hi", "--prompt", "你好", "--max_new_tokens", "4"],
                            capsys)
    assert code == 0
    assert "> hi" in stdout and "> 你好" in stdout
    assert "full_sft_64.pth" in err          # the one candidate in out/ was picked without --hidden_size


def test_stdin_lines_are_answered(out, capsys, monkeypatch):
    code, stdout, _ = run(["--out_dir", str(out), "--max_new_tokens", "3"], capsys, "one\n\ntwo\nthree\n", monkeypatch)
    assert code == 0
    assert [ln for ln in stdout.splitlines() if ln.startswith("> ")] == ["> one", "> two", "> three"]


def test_unknown_lora_lists_adapters(out, capsys):
    code, stdout, err = run(["--out_dir", str(out), "--lora_name", "lora_nope"], capsys)
    assert code == 2
    line, = err.strip().splitlines()
    assert "lora_nope" in line and "lora_music_64" in line and "trainer/train_lora.py" in line


def test_an_adapter_whose_base_moved_loads_with_the_base_flag_its_hint_names(tmp_path, capsys):
    """The base an adapter records is gone (and no file of its name is in out/): the one line says to put it
    back or to pass --base PATH, and eval_model.py --base PATH then loads the adapter onto it."""
    out, elsewhere = tmp_path / "out", tmp_path / "kept" / "my_base.pth"
    base = make_checkpoint(tmp_path / "bases" / "full_sft_64.pth")
    make_adapter(out / "lora" / "lora_music_64.pth", base)
    elsewhere.parent.mkdir()
    base.rename(elsewhere)
    code, _, err = run(["--out_dir", str(out), "--lora_name", "lora_music", "--prompt", "hi"], capsys)
    line, = err.strip().splitlines()
    adapter = out / "lora" / "lora_music_64.pth"
    assert code == 2 and line == (f"error: {adapter}: its base checkpoint {base} was not found (nor "
                                  f"full_sft_64.pth in {out}); put the base back there, or give it with --base PATH "
                                  "(eval_model.py, merge_lora.py)"), line
    code, stdout, err = run(["--out_dir", str(out), "--lora_name", "lora_music", "--base", str(elsewhere), "--prompt",
                             "hi", "--max_new_tokens", "3"], capsys)
    assert code == 0 and "> hi" in stdout, err
    assert "lora_music_64" in err and "my_base" in err, err         # the model line: the adapter on that base
    code, _, err = run(["--out_dir", str(out), "--ckpt", str(elsewhere), "--base", str(elsewhere)], capsys)
    assert code == 2 and f"--base: {elsewhere} is a full checkpoint, not an adapter" in err, err
    code, _, err = run(["--out_dir", str(out), "--lora_name", "lora_music", "--base", str(tmp_path / "no.pth")], capsys)
    assert code == 2 and err.strip() == f"error: --base {tmp_path / 'no.pth'}: file not found", err


def test_missing_checkpoint_names_the_command(tmp_path, capsys):
    code, _, err = run(["--out_dir", str(tmp_path), "--model_mode", "0"], capsys)
    assert code == 2
    line, = err.strip().splitlines()
    assert "pretrain_512.pth" in line and "python trainer/train_pretrain.py" in line


def test_lora_on_recorded_base_with_mode_warning(out, capsys):
    code, stdout, err = run(["--out_dir", str(out), "--lora_name", "lora_music", "--model_mode", "0",
                             "--prompt", "hi", "--max_new_tokens", "2"], capsys)
    assert code == 0, err
    assert "warning: --model_mode 0 (pretrain)" in err and "full_sft_64.pth" in err
    assert "> hi" in stdout


def test_auto_prompts_from_adapter_val_data(out):
    loaded = eval_model.load(eval_model.parse_args(["--out_dir", str(out), "--lora_name", "lora_music"]))
    assert loaded.label == "lora_music_64"
    val = json.loads((out.parent / "val.jsonl").read_text())
    assert [r["conversations"] for r in auto_prompts(loaded)] == [val["conversations"]]
    loaded.info.pop("adapter")
    assert [first_user(r["conversations"]) for r in auto_prompts(loaded)] == PROMPTS["chat"]


def identity_file(path, asks=("name", "name", "creator")):
    """A held-out identity test file as scripts/make_identity.py writes it (ask + identity per line)."""
    qs = {"name": "Who are you?", "creator": "Who made you?", "other": "Are you ChatGPT?"}
    return write_jsonl(path, [{"conversations": [{"role": "user", "content": qs[a] + "?" * i}], "ask": a,
                               "identity": {"name": "TinyMind", "creator": "the TinyMind project"}}
                              for i, a in enumerate(asks)])


def answers(texts, monkeypatch):
    """Make the model's answers in the tests these texts (the scorers see exactly them)."""
    monkeypatch.setattr(evaluation.answer_tests, "answer_batch", lambda loaded, questions, *a, **k: texts[:len(questions)])


def test_identity_and_task_tests_write_reports(out, tmp_path, capsys):
    ident = identity_file(tmp_path / "identity_test.jsonl")
    task = write_jsonl(tmp_path / "task.jsonl", [{"conversations": [{"role": "user", "content": "Who wrote Für Elise?"},
                                                                   {"role": "assistant", "content": "Beethoven"}],
                                                  "answers": ["Ludwig van Beethoven"]}])
    code, stdout, err = run(["--out_dir", str(out), "--identity_test", str(ident), "--task_test", str(task),
                             "--max_new_tokens", "4", "--batch_size", "2", "--bot_name", "TinyMind",
                             "--bot_creator", "the TinyMind project"], capsys)
    assert code == 0, err
    assert "identity checked: TinyMind by the TinyMind project (from --bot_name, --bot_creator)" in stdout
    assert "identity test (full_sft_64): 0/3 passed = 0.0%" in stdout
    assert "task test (full_sft_64, task.jsonl): 0/1 correct = 0.0%" in stdout
    rep = json.loads((out / "eval" / "identity_full_sft_64.json").read_text())
    assert rep["n"] == 3 and rep["rate"] == 0 and rep["sampling"]["temperature"] == 0.0
    assert len(rep["results"]) == 3 and {"question", "ask", "answer", "pass", "reason"} <= set(rep["results"][0])
    assert [r["ask"] for r in rep["results"]] == ["name", "name", "creator"]
    rep = json.loads((out / "eval" / "task_task_full_sft_64.json").read_text())
    assert rep["results"][0]["golds"] == ["Ludwig van Beethoven"] and rep["results"][0]["reference"] == "Beethoven"


def test_a_model_without_identity_and_no_flags_is_one_line(out, tmp_path, capsys):
    code, stdout, err = run(["--out_dir", str(out), "--identity_test", str(identity_file(tmp_path / "i.jsonl")),
                             "--max_new_tokens", "2"], capsys)
    assert code == 2
    line, = err.strip().splitlines()[-1:]
    assert line.startswith("error: full_sft_64 records no identity") and "--bot_name NAME --bot_creator WHO" in line
    assert "answered" not in err and not (out / "eval").exists()    # nothing asked, nothing written


def test_identity_comes_from_the_adapter_record_and_is_scored_strictly(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    base = make_checkpoint(out / "full_sft_64.pth")
    make_adapter(out / "lora" / "lora_melody_64.pth", base, meta={"identity": MELODY})
    answers(["不是的，我不是Melody", "I'm Melody, made by Ada Lab.", "我是由Ada实验室开发的。", "I'm TinyMind."],
            monkeypatch)
    ident = identity_file(tmp_path / "i.jsonl", asks=("name", "name", "creator", "name"))  # the file says TinyMind
    code, stdout, err = run(["--out_dir", str(out), "--lora_name", "lora_melody", "--identity_test", str(ident)],
                            capsys)
    assert code == 0, err
    assert "identity checked: Melody by Ada Lab / Ada 实验室 (from the adapter's training data)" in stdout
    rep = json.loads((out / "eval" / "identity_lora_melody_64.json").read_text())
    assert [r["pass"] for r in rep["results"]] == [False, True, True, False]
    assert rep["results"][0]["reason"] == "denies being Melody" and rep["identity"]["name"] == "Melody"
    code, stdout, _ = run(["--out_dir", str(out), "--lora_name", "lora_melody", "--identity_test", str(ident),
                           "--bot_creator", "Bob"], capsys)                # a flag wins over the record
    assert "identity checked: Melody by Bob (from --bot_creator and the adapter's training data)" in stdout
    assert "1/4 passed" in stdout


def test_a_second_models_report_keeps_the_first(out, tmp_path, capsys, monkeypatch):
    answers(["I'm TinyMind."] * 3, monkeypatch)
    other = make_checkpoint(tmp_path / "elsewhere" / "full_sft_64.pth", seed=1)   # the same label, another model
    ident = identity_file(tmp_path / "i.jsonl")
    flags = ["--out_dir", str(out), "--identity_test", str(ident), "--bot_name", "TinyMind", "--bot_creator", "x"]
    reports = out / "eval"
    assert run(flags, capsys)[0] == 0
    first = (reports / "identity_full_sft_64.json").read_text()
    assert run(flags, capsys)[0] == 0                                      # the same model: replaced in place
    assert [p.name for p in reports.iterdir()] == ["identity_full_sft_64.json"]
    code, stdout, err = run(flags + ["--ckpt", str(other)], capsys)
    assert code == 0, err
    kept = [p for p in reports.iterdir() if p.name != "identity_full_sft_64.json"]
    assert len(kept) == 1 and kept[0].name.startswith("identity_full_sft_64_") and f"as {kept[0]}" in stdout
    assert json.loads(kept[0].read_text())["model_key"] == json.loads(first)["model_key"]
    latest = json.loads((reports / "identity_full_sft_64.json").read_text())
    assert latest["model_key"]["checkpoint"] == str(other.resolve())
    mine = tmp_path / "mine.json"
    assert run(flags + ["--report", str(mine)], capsys)[0] == 0 and mine.is_file()   # --report is honoured
    assert len(list(reports.iterdir())) == 2


def test_automatic_test_shows_reference_and_verdict(out, capsys, monkeypatch):
    loaded = eval_model.load(eval_model.parse_args(["--out_dir", str(out)]))
    said = iter(["I'm not TinyMind.", "It is not in C major.", "TinyMind, a small model."])
    monkeypatch.setattr("apps.terminal.show", lambda *a: next(said))
    records = [{"conversations": [{"role": "user", "content": "Who are you?"},
                                  {"role": "assistant", "content": "I'm TinyMind."}], "ask": "name"},
               {"conversations": [{"role": "user", "content": "What key is it in?"},
                                  {"role": "assistant", "content": "It is in C major."}], "answers": ["C major"]},
               {"conversations": [{"role": "user", "content": "你是谁？"}], "ask": "name"}]
    ident = {"name": "TinyMind", "creator": "the TinyMind project"}
    auto_test(ChatEngine(loaded), records, {"max_new_tokens": 4}, identity=(ident, "--bot_name, --bot_creator"))
    shown = capsys.readouterr().out
    assert "identity checked: TinyMind by the TinyMind project (from --bot_name, --bot_creator)" in shown
    assert "> Who are you?" in shown and "   reference: I'm TinyMind.\n   [FAIL] denies being TinyMind" in shown
    assert "   reference: It is in C major.\n   [FAIL] expected 'C major'" in shown
    assert "> 你是谁？" in shown and "   [PASS] ok" in shown


def test_eval_on_a_terminal_runs_the_automatic_test_first(out, capsys, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr(sys, "stdin", Terminal(""))                        # Ctrl-D at the chat prompt
    code, stdout, err = run(["--out_dir", str(out), "--lora_name", "lora_music", "--max_new_tokens", "3"], capsys)
    assert code == 0, err
    val = json.loads((out.parent / "val.jsonl").read_text())["conversations"]
    assert "automatic test:" in stdout and f"> {val[0]['content']}" in stdout
    assert f"   reference: {val[1]['content']}" in stdout and "   [FAIL] expected " in stdout
    assert "identity: not scored (lora_music_64 records no identity" in stdout
    assert stdout.index("automatic test:") < stdout.index("chat (keeps as many earlier exchanges as the window holds")


def test_bad_test_file_is_one_line(out, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    code, _, err = run(["--out_dir", str(out), "--task_test", str(bad)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "bad.jsonl" in err


def test_cli_from_the_shell(out):
    """The real command line, stdin piped in (not a terminal)."""
    res = subprocess.run([sys.executable, "eval_model.py", "--out_dir", str(out), "--lora_name", "lora_music",
                          "--max_new_tokens", "3"], input="Who are you?\n", capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "> Who are you?" in res.stdout and "lora_music_64.pth" in res.stderr
