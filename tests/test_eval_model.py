"""eval_model.py: loading by name, adapters, clear errors, scripted chat and the automatic tests.

    pytest tests/test_eval_model.py
"""
import io
import json
import subprocess
import sys

import pytest

import eval_model
from chat.terminal import PROMPTS, auto_prompts
from cli import run_cli
from dataset.scoring import identity_verdict, task_verdict
from factories import REPO as ROOT, make_adapter, make_checkpoint, write_chat


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
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = 0
    try:
        run_cli(eval_model.main, argv)
    except SystemExit as e:
        code = e.code
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_identity_verdicts():
    ok = identity_verdict
    assert ok("I'm TinyMind, made by the TinyMind project.", "TinyMind")[0]
    assert ok("No, I'm not ChatGPT. I'm TinyMind.", "TinyMind")[0]
    assert ok("I am tinymind; I'm not Claude and I'm not related to OpenAI.", "TinyMind")[0]
    assert ok("不，我是TinyMind，是TinyMind项目开发的AI助手，不是ChatGPT。", "TinyMind")[0]
    assert ok("我不是通义千问。我是ＴｉｎｙＭｉｎｄ。", "TinyMind")[0]           # full-width name
    assert not ok("I am ChatGPT, made by OpenAI.", "TinyMind")[0]
    assert not ok("I'm TinyMind. I was trained by OpenAI.", "TinyMind")[0]
    assert not ok("我是通义千问。", "TinyMind")[0]
    assert not ok("I am a helpful assistant.", "TinyMind")[0]
    assert ok("I'm MiniMind.", "MiniMind")[0]                                # its own name is not "another"


def test_task_verdicts():
    ok = task_verdict
    assert ok("The answer is Johann Sebastian Bach!", ["J. S. Bach", "Johann Sebastian Bach"])[0]
    assert ok("它是《月光奏鸣曲》。", ["月光奏鸣曲"])[0]
    assert ok("ＢＥＥＴＨＯＶＥＮ wrote it", ["Beethoven"])[0]                  # full-width -> half-width
    assert ok("a piano", ["The Piano"])[0]                                  # articles and case
    assert not ok("Mozart", ["Beethoven"])[0]
    assert not ok("anything", ["", "..."])[0]                               # an empty reference never matches


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
    assert auto_prompts(loaded) == [val["conversations"][0]["content"]]
    loaded.info.pop("adapter")
    assert auto_prompts(loaded) == PROMPTS["chat"]


def test_identity_and_task_tests_write_reports(out, tmp_path, capsys):
    ident = tmp_path / "identity_test.jsonl"
    ident.write_text("".join(json.dumps({"conversations": [{"role": "user", "content": q}],
                                         "expect": {"name": "TinyMind"}}, ensure_ascii=False) + "\n"
                             for q in ("Who are you?", "你是谁？", "Name?")))
    task = tmp_path / "task.jsonl"
    task.write_text(json.dumps({"conversations": [{"role": "user", "content": "Who wrote Für Elise?"},
                                                  {"role": "assistant", "content": "Beethoven"}],
                                "answers": ["Ludwig van Beethoven"]}) + "\n")
    code, stdout, err = run(["--out_dir", str(out), "--identity_test", str(ident), "--task_test", str(task),
                             "--max_new_tokens", "4", "--batch_size", "2"], capsys)
    assert code == 0, err
    assert "identity test (full_sft_64): 0/3 passed = 0.0%" in stdout
    assert "task test (full_sft_64, task.jsonl): 0/1 correct = 0.0%" in stdout
    rep = json.loads((out / "eval" / "identity_full_sft_64.json").read_text())
    assert rep["n"] == 3 and rep["rate"] == 0 and rep["sampling"]["temperature"] == 0.0
    assert len(rep["results"]) == 3 and {"question", "answer", "pass", "reason"} <= set(rep["results"][0])
    rep = json.loads((out / "eval" / "task_task_full_sft_64.json").read_text())
    assert rep["results"][0]["aliases"] == ["Ludwig van Beethoven"]


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
