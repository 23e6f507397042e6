"""scripts/quickstart.py end to end with a tiny budget on a slice of the shipped data, then once more to show
finished stages are reused, then the headline user command on its outputs; the clock that shares the budget,
the tests fitted to what it leaves, and the summary's warning for a stage stopped before it could learn.

    pytest tests/test_quickstart.py
"""
import json
import subprocess
import sys

import pytest

from factories import REPO, make_checkpoint
from pipelines import clock as qs
from pipelines.quickstart_summary import smaller_tests, too_few_steps
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
    assert rep["n"] == 2 and rep["model"]["adapter"]     # the budget is spent: a quarter of the 6 questions
    assert "note: the tests asked smaller samples to fit a budget already spent" in summary, summary
    assert "2 of the 6 identity questions, 4 of the 16 music questions of each sample" in summary, summary
    stopped = any("stopped" in json.loads(x) for x in (out / "logs" / "lora_music_48.jsonl").read_text().splitlines())
    assert ("warning: lora_music_48 got " in summary) == stopped, summary    # a short run warned, a full one not
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
    shows a third of the idle speed triples the reserve, the tests' part of it held to TEST_SHARE of the
    budget (they will ask smaller samples) so that training keeps its time."""
    now = [1000.0]
    monkeypatch.setattr(qs.time, "time", lambda: now[0])
    clock = qs.Clock(10, {"pretrain": 1, "lora": 3}, ["pretrain", "lora", "eval_lora"])
    reserve = qs.OVERHEAD["pretrain"] + qs.OVERHEAD["lora"] + qs.OVERHEAD["eval_lora"]
    assert clock.slice("pretrain") * 60 == pytest.approx((600 - reserve) / 4)          # idle: the tests in full
    now[0] += 100
    clock.done("pretrain", seconds=100, trained_s=100 - qs.OVERHEAD["pretrain"])   # overhead as estimated
    log = tmp_path / "pretrain.jsonl"
    log.write_text("".join(json.dumps({"step": i, "tok_per_s": qs.IDLE_TOK_S["pretrain"] // 3}) + "\n"
                           for i in range(5)))
    clock.observe("pretrain", log)
    assert clock.slowdown == pytest.approx(3.0, rel=0.01)
    assert 3.0 * qs.OVERHEAD["eval_lora"] > qs.TEST_SHARE * 600                        # in full they would not fit
    left = 500 - 3.0 * qs.OVERHEAD["lora"] - qs.TEST_SHARE * 600
    assert clock.slice("lora") * 60 == pytest.approx(left, rel=0.01)


def test_the_tests_ask_what_fits_in_the_time_left(monkeypatch):
    """At 4.5x the idle speed (the load of 4-5 on two cores) the four tests of the CPU path take 8m42s in
    full; with 5 minutes left they ask the share of each file that fits, with 2 minutes a quarter of it."""
    monkeypatch.setattr(qs.time, "time", lambda: 0.0)
    clock = qs.Clock(15, {}, list(qs.TESTS))
    clock.speed_ratio = 4.5
    assert clock.tests_cost(1.0) == pytest.approx(4.5 * sum(qs.OVERHEAD[s] for s in qs.TESTS))
    assert clock.test_fraction(10 * 60) == 1.0
    fraction = clock.test_fraction(5 * 60)
    assert 0.25 < fraction < 1 and clock.tests_cost(fraction) == pytest.approx(5 * 60)
    assert clock.test_fraction(2 * 60) == qs.MIN_SAMPLE
    assert [qs.sample_size(n, fraction) for n in (44, 32)] == [18, 13]
    assert [qs.sample_size(n, 1.0) for n in (44, 32)] == [44, 32] and qs.sample_size(3, 0.01) == 1
    plan = {"fraction": fraction, "left_s": 300, "slowdown": 4.5, "identity": [18, 44], "music": [13, 32]}
    assert smaller_tests(plan, "python eval_model.py --lora_name lora_music --identity_test") == [
        "note: the tests asked smaller samples to fit the 5m00s the budget left them on a machine 4.5x slower than "
        "idle: 18 of the 44 identity questions, 13 of the 32 music questions of each sample; `python eval_model.py "
        "--lora_name lora_music --identity_test` asks every identity question"]
    assert smaller_tests({**plan, "fraction": 1.0}, "") == []


def test_a_stage_stopped_before_it_could_learn_is_a_warning_saying_what_to_do(tmp_path):
    """The issue's busy run: SmolLM2's LoRA stopped by the budget at step 18 of 240 (the bot then knew its
    name on 3 of 44 questions). Under MIN_STEPS (half the idle run's steps) the summary warns and says what
    to do; a run stopped later, or one that finished all its steps, is not warned about."""
    out = tmp_path / "out"
    (out / "logs").mkdir(parents=True)

    def log(name, steps, total, stopped=True):
        rows = [{"step": 0, "config": {}}] + [{"step": s, "loss": 1.0} for s in range(10, steps + 1, 10)]
        rows += [{"step": steps, "stopped": f"time limit of 7.55 minutes reached at step {steps} of {total}"}] * stopped
        (out / "logs" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    log("lora_music_576", 18, 240)
    log("pretrain_256", 351, 2000)
    log("full_sft_256", 20, 20, stopped=False)
    log("lora_identity_256", 40, 300)
    cmd = "python trainer/train_lora.py --lora_name lora_music --data_path ../dataset/music.jsonl --epochs 5"
    runs = [("pretrain", out / "pretrain_256.pth", "scratch/pretrain_256"),
            ("full_sft", out / "full_sft_256.pth", "scratch/full_sft_256"),
            ("scratch_lora", out / "lora" / "lora_identity_256.pth", "scratch/lora_identity_256"),
            ("lora", out / "lora" / "lora_music_576.pth", "lora_music_576")]
    assert too_few_steps(runs, 15, cmd) == [
        "warning: scratch/lora_identity_256 got 40 steps (of 300 for a full run; it needs about 115 to learn): too "
        "few to learn, its test scores mean little; give --minutes 45, or run it on a less busy machine",
        "warning: lora_music_576 got 18 steps (of 240 for a full run; it needs about 58 to learn): too few to learn, "
        f"its test scores mean little; run the full one, `{cmd}`, or give --minutes 50"]
    assert qs.MIN_STEPS["lora"] == 58 and too_few_steps(runs[3:], 15, cmd)[0].startswith("warning: lora_music_576")
    log("lora_music_576", 117, 240)                          # the idle run's steps: it learned its name (91%)
    assert too_few_steps(runs[3:], 15, cmd) == []
