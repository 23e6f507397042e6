"""Bad input to the trainers: one line `error: <file>:<line> ...` (or the flag), exit status 2, nothing
written to out/. CPU; the inputs are checked before any output exists, so these run in a second each.

    pytest tests/test_train_bad_input.py
"""
import contextlib
import json
import os
import threading
from pathlib import Path

import pytest

from core.cli import run_cli
from factories import FAST, REPO, make_checkpoint, run_python, write_chat

pytestmark = pytest.mark.usefixtures("one_thread")

GOOD = {"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
BAD_LINES = {
    "malformed_json": ('{"conversations": [', "malformed JSON"),
    "missing_conversations": (json.dumps({"prompt": "hi"}), "missing"),
    "unknown_role": (json.dumps({"conversations": [{"role": "wizard", "content": "hi"},
                                                   {"role": "assistant", "content": "x"}]}), "unknown role"),
    "ends_with_user": (json.dumps({"conversations": [{"role": "user", "content": "hi"}]}), "assistant"),
    "empty_content": (json.dumps({"conversations": [{"role": "user", "content": "hi"},
                                                    {"role": "assistant", "content": " "}]}), "empty content"),
}


def run_main(stage, argv, capsys):
    import trainer.train_full_sft as ts
    import trainer.train_lora as tl
    import trainer.train_pretrain as tp
    main = {"pretrain": tp.main, "full_sft": ts.main, "lora": tl.main}[stage]
    with pytest.raises(SystemExit) as e:
        run_cli(main, argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def files_in(folder):
    return [p for p in Path(folder).rglob("*") if p.is_file()] if Path(folder).exists() else []


@pytest.fixture
def base(tmp_path):
    return make_checkpoint(tmp_path / "bases" / "full_sft_64.pth")


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_line_names_file_and_line(tmp_path, base, capsys, case):
    line, what = BAD_LINES[case]
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps(GOOD) + "\n" + line + "\n", encoding="utf-8")
    out = tmp_path / "out"
    err = run_main("lora", ["--base", str(base), "--data_path", str(data), "--out_dir", str(out), *FAST], capsys)
    assert f"{data}:2" in err and what in err, err
    assert files_in(out) == []


@contextlib.contextmanager
def unblocked_after(fifo, seconds=30):
    """If a reader still waits on the FIFO after `seconds`, open it for writing and close it (the reader then
    sees an empty file), so that a test of a reader that should never have opened it fails instead of hanging."""
    done = threading.Event()

    def writer():
        while not done.wait(seconds):
            with contextlib.suppress(OSError):      # ENXIO: nobody reads it
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join()


@pytest.mark.parametrize("case", ["empty_file", "non_utf8", "directory", "missing_file", "text_for_chat", "fifo"])
def test_bad_file(tmp_path, base, capsys, case):
    data = tmp_path / "data.jsonl"
    guard = contextlib.nullcontext()
    if case == "fifo":                         # nothing writes to it: opened, it would wait without a word
        os.mkfifo(data)
        guard = unblocked_after(data)
    elif case == "empty_file":
        data.write_text("", encoding="utf-8")
    elif case == "non_utf8":
        data.write_bytes(json.dumps(GOOD).encode() + b"\n" + '{"text": "caf\xe9"}'.encode("latin-1") + b"\n")
    elif case == "directory":
        data.mkdir()
    elif case == "text_for_chat":
        data.write_text(json.dumps({"text": "plain text"}) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    with guard:
        err = run_main("full_sft", ["--base", str(base), "--data_path", str(data), "--out_dir", str(out), *FAST],
                       capsys)
    assert str(data) in err
    want = {"empty_file": "empty", "non_utf8": ":2: bytes that are not UTF-8", "directory": "directory",
            "missing_file": "no such file", "text_for_chat": ":1:",
            "fifo": "is a FIFO (named pipe): reading it would wait for a writer; write the data to a regular"}[case]
    assert want in err, err
    assert files_in(out) == []


def test_a_system_prompt_that_leaves_most_samples_without_a_target_is_refused(tmp_path, base, capsys):
    """--max_seq_len 64 and a system prompt of about 25 tokens: the replies of the 18 long conversations are
    cut off, 2 short ones keep theirs. Training on 2 samples (and validating on none: loss 0.0000 over no
    token) is refused in one line naming the file and the flags; with fewer cut off, it trains and says how many."""
    import trainer.train_full_sft as ts
    def chat(question, i):
        return {"conversations": [{"role": "user", "content": question}, {"role": "assistant", "content": f"a{i}"}]}
    long = [chat("tell me about the song " * 8, i) for i in range(20)]
    short = [chat("hi", i) for i in range(20)]
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in long[:18] + short[:2]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    flags = ["--base", str(base), "--data_path", str(data), "--out_dir", str(out), *FAST]
    system = ["--system_prompt", "You are a helpful assistant who knows music. " * 2]
    err = run_main("full_sft", flags + system, capsys)
    assert "conversations keep no token to train on after the cut to --max_seq_len 64 (with --loss_on assistant, " \
           "and the --system_prompt); raise --max_seq_len or shorten the system prompt" in err, err
    assert f"error: {data}: 17 of 19 conversations" in err or f"error: {data}: 18 of 19 conversations" in err, err
    assert files_in(out) == []
    data.write_text("\n".join(json.dumps(r) for r in long[:4] + short[:16]) + "\n", encoding="utf-8")
    ts.main(flags + system + ["--max_steps", "1", "--val_ratio", "0.5"])
    said = capsys.readouterr().out
    assert "without a target token" in said and "| val_loss 0.0000" not in said, said
    val = [json.loads(x) for x in (out / "logs" / "full_sft_64.jsonl").read_text().splitlines()]
    assert [r["val_loss"] > 0 for r in val if "val_loss" in r] == [True]


def test_pretrain_rejects_conversations(tmp_path, chat_data, capsys):
    data = chat_data
    out = tmp_path / "out"
    err = run_main("pretrain", ["--preset", "tiny", "--data_path", str(data), "--out_dir", str(out), *FAST], capsys)
    assert f"{data}:1" in err and "pretraining" in err
    assert files_in(out) == []


def test_unknown_lora_target(tmp_path, base, chat_data, capsys):
    data = chat_data
    out = tmp_path / "out"
    err = run_main("lora", ["--base", str(base), "--data_path", str(data), "--out_dir", str(out),
                            "--lora_targets", "q_proj,qkv_proj", *FAST], capsys)
    assert "--lora_targets" in err and "qkv_proj" in err
    assert files_in(out) == []


def test_missing_base_names_file_and_command(tmp_path, chat_data, capsys):
    data = chat_data
    out = tmp_path / "out"
    err = run_main("lora", ["--data_path", str(data), "--out_dir", str(out), *FAST], capsys)
    assert str(out / "full_sft_512.pth") in err and "python trainer/train_full_sft.py" in err
    err = run_main("full_sft", ["--data_path", str(data), "--out_dir", str(out), "--hidden_size", "768"], capsys)
    assert str(out / "pretrain_768.pth") in err and "python trainer/train_pretrain.py" in err
    assert files_in(out) == []


def test_adapter_given_as_base_and_state_for_another_base(tmp_path, base, capsys):
    import trainer.train_lora as tl
    data = write_chat(tmp_path / "chat.jsonl", n=8)
    out = tmp_path / "out"
    tl.main(["--base", str(base), "--data_path", str(data), "--out_dir", str(out), "--max_steps", "2",
             "--save_interval", "1", *FAST])
    adapter = out / "lora" / "lora_music_64.pth"
    before = {p: p.stat().st_mtime_ns for p in files_in(out)}
    # an adapter where a full checkpoint is expected
    err = run_main("lora", ["--base", str(adapter), "--data_path", str(data), "--out_dir", str(out), *FAST], capsys)
    assert str(adapter) in err and "adapter" in err
    # resuming LoRA training on a different base than the saved state was made from
    other = make_checkpoint(tmp_path / "other" / "full_sft_64.pth", seed=1)
    err = run_main("lora", ["--base", str(other), "--data_path", str(data), "--out_dir", str(out), "--resume",
                            *FAST], capsys)
    assert "another base checkpoint" in err and "step_1.pth" in err
    assert {p: p.stat().st_mtime_ns for p in files_in(out)} == before       # nothing written


def test_skip_bad_skips_and_counts(tmp_path, base, capsys):
    import trainer.train_full_sft as ts
    data = tmp_path / "data.jsonl"
    lines = [json.dumps(GOOD)] * 6 + [BAD_LINES["malformed_json"][0], BAD_LINES["unknown_role"][0]]
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ts.main(["--base", str(base), "--data_path", str(data), "--out_dir", str(tmp_path / "out"), "--max_steps", "1",
             "--skip_bad", *FAST])
    assert "2 bad lines skipped" in capsys.readouterr().out
    assert (tmp_path / "out" / "full_sft_64.pth").exists()


def test_real_command_line_prints_one_line(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps(GOOD) + "\n{oops\n", encoding="utf-8")
    out = tmp_path / "out"
    r = run_python(["trainer/train_pretrain.py", "--data_path", str(data), "--out_dir", str(out)], REPO, check=False)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert r.stderr.startswith(f"error: {data}:1:") or r.stderr.startswith(f"error: {data}:2:"), r.stderr
    assert "Traceback" not in r.stderr and not out.exists()
