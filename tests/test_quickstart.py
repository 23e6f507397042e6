"""scripts/quickstart.py end to end with a tiny budget on a slice of the shipped data, then once more to show
finished stages are reused, then the headline user command on its outputs.

    pytest tests/test_quickstart.py
"""
import json
import subprocess
import sys

import pytest

from factories import REPO, make_checkpoint
SLICE = {"pretrain.jsonl": 200, "sft.jsonl": 120, "sft_val.jsonl": 16, "identity.jsonl": 80,
         "identity_test.jsonl": 6, "music.jsonl": 60, "music_test.jsonl": 6}


@pytest.fixture
def data_dir(tmp_path):
    """The first lines of each shipped file (the whole pipeline, but seconds per stage)."""
    out = tmp_path / "data"
    out.mkdir()
    for name, n in SLICE.items():
        src = REPO / "dataset" / name
        if not src.exists():
            pytest.skip(f"{src} not built yet (python scripts/build_data.py)")
        with open(src, encoding="utf-8") as f:
            lines = [next(f) for _ in range(n)]
        (out / name).write_text("".join(lines), encoding="utf-8")
    return out


def quickstart(out, data_dir):
    return subprocess.run([sys.executable, "scripts/quickstart.py", "--minutes", "0.1", "--out_dir", str(out),
                           "--data_dir", str(data_dir), "--device", "cpu"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def test_quickstart_tiny_budget(tmp_path, data_dir):
    """The CPU path: the from-scratch proof in out/scratch, then lora_music on the imported model (here a
    tiny stand-in for out/smollm2_135m.pth, so that the test downloads nothing), then the tests."""
    out = tmp_path / "out"
    make_checkpoint(out / "smollm2_135m.pth", stage="imported", hidden=48)
    res = quickstart(out, data_dir)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for f in ("scratch/pretrain_64.pth", "scratch/full_sft_64.pth", "scratch/lora/lora_identity_64.pth",
              "lora/lora_music_48.pth", "scratch/logs/pretrain_64.jsonl", "logs/lora_music_48.jsonl",
              "quickstart_summary.md"):
        assert (out / f).exists(), f
    assert not list(out.glob("full_sft_*.pth"))         # nothing from scratch where the user's commands look
    summary = (out / "quickstart_summary.md").read_text()
    assert "| lora_music_48 |" in summary and "identity, held-out phrasings" in summary
    assert "music, held-out questions" in summary and "| scratch/pretrain_64 |" in summary
    rep = json.loads((out / "eval" / "identity_lora_music_48.json").read_text())
    assert rep["n"] == 6 and rep["model"]["adapter"]
    for line in res.stdout.splitlines():
        if line.startswith("$ ") and "train_" in line:   # every training stage ran under a time limit
            assert "--max_minutes" in line, line
    assert "python eval_model.py --lora_name lora_music --model_mode 1" in res.stdout
    assert "streamlit run scripts/web_demo.py" in res.stdout

    again = quickstart(out, data_dir)               # everything reused: no training, no tests rerun
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("reusing ") == 8 and "$ " not in again.stdout

    chat = subprocess.run([sys.executable, "eval_model.py", "--lora_name", "lora_music", "--model_mode", "1",
                           "--out_dir", str(out), "--max_new_tokens", "4"], input="Who are you?\n",
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert chat.returncode == 0, chat.stderr
    assert "> Who are you?" in chat.stdout


def test_bad_budget_is_one_line():
    res = subprocess.run([sys.executable, "scripts/quickstart.py", "--minutes", "0"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stderr.strip() == "error: --minutes must be a number in (0.0, 10080] (got 0.0)"


def test_clock_shares_what_is_left_and_plans_for_a_slow_machine(tmp_path, monkeypatch):
    """Each stage gets its share of the time left after the remaining steps' overheads; a stage's log that
    shows a third of the idle speed triples the reserve (so the tests still fit on a busy machine)."""
    from pipelines import clock as qs
    now = [1000.0]
    monkeypatch.setattr(qs.time, "time", lambda: now[0])
    clock = qs.Clock(10, {"pretrain": 1, "lora": 3}, ["pretrain", "lora", "eval_lora"])
    reserve = qs.OVERHEAD["pretrain"] + qs.OVERHEAD["lora"] + qs.OVERHEAD["eval_lora"]
    assert clock.slice("pretrain") * 60 == pytest.approx((600 - reserve) / 4)
    now[0] += 100
    clock.done("pretrain", seconds=100, trained_s=100 - qs.OVERHEAD["pretrain"])   # overhead as estimated
    log = tmp_path / "pretrain.jsonl"
    log.write_text("".join(json.dumps({"step": i, "tok_per_s": qs.IDLE_TOK_S["pretrain"] // 3}) + "\n"
                           for i in range(5)))
    clock.observe("pretrain", log)
    assert clock.slowdown == pytest.approx(3.0, rel=0.01)
    left = 500 - 3.0 * (qs.OVERHEAD["lora"] + qs.OVERHEAD["eval_lora"])
    assert clock.slice("lora") * 60 == pytest.approx(left, rel=0.01)
