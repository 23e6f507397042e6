"""Files that are wrong in ways json.loads or torch.load do not notice, through the real commands: a data line
with an unpaired surrogate, JSON nested too deeply, an Alpaca history of the wrong type; a .pth that is text,
or whose config or tokenizer is garbage. Each gives its one line, exit status 2, nothing in out/.

    python -m pytest -q tests/test_bad_files.py
"""
import json

import pytest
import torch

from factories import FAST, REPO, make_checkpoint, run_python

pytestmark = pytest.mark.usefixtures("one_thread")

GOOD = {"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
# raw JSON text of the second line -> what the message says about it
BAD_LINES = {
    "surrogate": ('{"conversations": [{"role": "user", "content": "caf\\ud800"}, {"role": "assistant", "content": "x"}]}',
                  "conversations[0].content holds an unpaired UTF-16 surrogate"),
    "deep": ('{"text": ' + "[" * 50_000 + "]" * 50_000 + "}", "JSON nested too deeply"),
    "history": (json.dumps({"instruction": "q", "output": "a", "history": 7}), "Alpaca 'history' is int"),
}


def data_file(tmp_path, case):
    data = tmp_path / f"{case}.jsonl"
    data.write_text(json.dumps(GOOD) + "\n" + BAD_LINES[case][0] + "\n", encoding="utf-8")
    return data


def error_lines(r):
    """The command failed with exit 2 and no traceback; returns its 'error: ' lines."""
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    return errors


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_prepare_data_validate(tmp_path, case):
    data = data_file(tmp_path, case)
    errors = error_lines(run_python(["scripts/prepare_data.py", "validate", str(data)], REPO, check=False))
    assert errors[0].startswith(f"error: {data}:2: {BAD_LINES[case][1]}"), errors
    assert errors[1:] == ["error: 1 problems in 1 of 1 files; fix the lines listed above"]    # the summary


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_train_full_sft_data(tmp_path, case):
    data, out = data_file(tmp_path, case), tmp_path / "out"
    base = make_checkpoint(tmp_path / "bases" / "pretrain_64.pth", stage="pretrain")
    r = run_python(["trainer/train_full_sft.py", "--data_path", str(data), "--base", str(base),
                    "--out_dir", str(out), *FAST], REPO, check=False)
    errors = error_lines(r)
    assert len(errors) == 1 and r.stderr.count("\n") == 1, r.stderr
    assert errors[0].startswith(f"error: {data}:2: {BAD_LINES[case][1]}"), errors
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


def bad_base(path, good, damage):
    """A base checkpoint damaged in one way: text under a .pth name, or garbage config / tokenizer."""
    if damage == "text":
        path.write_text("this is not a checkpoint\n")
        return path
    obj = torch.load(good, weights_only=True)
    if damage == "config":
        obj["config"] = {**obj["config"], "hidden_size": "wide"}
    else:
        obj["tokenizer"] = {**obj["tokenizer"], "model": b"\x00not a sentencepiece model"}
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("damage,fragment", [("text", "is not a PyTorch file"),
                                             ("config", "the 'config' entry has hidden_size = 'wide'"),
                                             ("tokenizer", "the 'tokenizer' entry (sentencepiece) cannot be rebuilt")])
def test_train_full_sft_bad_base(tmp_path, chat_data, damage, fragment):
    good = make_checkpoint(tmp_path / "good" / "pretrain_64.pth", stage="pretrain")
    base, out = bad_base(tmp_path / "pretrain_64.pth", good, damage), tmp_path / "out"
    r = run_python(["trainer/train_full_sft.py", "--data_path", str(chat_data), "--base", str(base),
                    "--out_dir", str(out), *FAST], REPO, check=False)
    errors = error_lines(r)
    assert errors == [e for e in r.stderr.splitlines() if e] and len(errors) == 1, r.stderr
    assert errors[0].startswith(f"error: {base}: {fragment}"), errors
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))
