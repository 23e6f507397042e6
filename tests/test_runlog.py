"""Tests for trainer/runlog.py: the train loss it reports is the token-weighted mean over the log interval,
and its loss figure is titled, with the train curve raw and smoothed.

    python -m pytest tests/test_runlog.py -q
"""
import json

import pytest

from checkpoint import layout
from trainer.args import TrainConfig
from trainer.runlog import RunLog, build_figure, ema

# (loss per target token, target tokens) of each optimizer step
STEPS = [(4.0, 10), (2.0, 30), (3.0, 20), (1.0, 40), (6.0, 5), (2.5, 15), (0.5, 60), (3.5, 25), (1.5, 50),
         (5.0, 10)]


def config(log_interval):
    return TrainConfig(log_interval=log_interval, use_wandb=False)


def mean(steps):
    """Token-weighted mean loss of (loss, n_targets) steps, computed independently of RunLog."""
    return sum(loss * n for loss, n in steps) / sum(n for _, n in steps)


def run_steps(out, steps, log_interval):
    """A RunLog fed these steps -> (the log, summary() after each step)."""
    log = RunLog(out, "run", config(log_interval), len(steps), (0, 0), main=True)
    summaries = []
    for i, (loss, n) in enumerate(steps, 1):
        log.step_done(i, 0, loss * n, n, loss, 1e-3, tokens_seen=i * 100)
        summaries.append(log.summary())
    log.close_bar()
    log.publish()
    return log, summaries


def test_train_loss_is_the_mean_over_the_log_interval(tmp_path, capsys):
    _, summaries = run_steps(tmp_path, STEPS, log_interval=4)
    rows = [json.loads(s) for s in layout.log_path(tmp_path, "run").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
    # lines at 4, 8 and the last step; the last (10, no multiple of 4) still covers 4 steps, not 2
    assert losses == pytest.approx({4: mean(STEPS[0:4]), 8: mean(STEPS[4:8]), 10: mean(STEPS[6:10])})
    assert f"loss {mean(STEPS[4:8]):.4f}" in capsys.readouterr().out
    # the summary (checkpoint meta, quickstart table): the same mean, at any step, never the last batch
    assert summaries[-1]["final_loss"] == pytest.approx(mean(STEPS[6:10]))
    assert summaries[5]["final_loss"] == pytest.approx(mean(STEPS[2:6]))
    assert summaries[0]["final_loss"] == pytest.approx(STEPS[0][0])


def test_ema_is_debiased():
    assert ema([5.0, 5.0, 5.0], 0.9) == pytest.approx([5.0, 5.0, 5.0])   # no pull towards 0 at the start
    assert ema([1.0, 3.0], 0.5) == pytest.approx([1.0, (0.25 + 1.5) / 0.75])
    assert ema([1.0, 3.0], 0.0) == [1.0, 3.0]


@pytest.fixture
def close_figures():
    yield
    import matplotlib.pyplot as plt
    plt.close("all")


def write_log(path, scale):
    path.write_text(json.dumps({"step": 0, "config": {}}) + "\n"
                    + "".join(json.dumps({"step": s, "loss": scale / s}) + "\n" for s in range(1, 9))
                    + json.dumps({"step": 8, "val_loss": scale}) + "\n")
    return path


def lines_of(ax, name):
    return [ln for ln in ax.get_lines() if ln.get_color() == color_of(ax, name)]


def color_of(ax, name):
    return next(ln.get_color() for ln in ax.get_lines() if ln.get_label().startswith(f"{name} train"))


def test_the_figure_is_titled_with_raw_and_smoothed_train_curves(tmp_path, close_figures):
    a, b = write_log(tmp_path / "lora_a_64.jsonl", 1.0), write_log(tmp_path / "lora_b_64.jsonl", 2.0)
    ax = build_figure([a]).axes[0]        # what RunLog.close() draws for its run
    assert ax.get_title() == "lora_a_64" and ax.get_xlabel() == "step" and "loss" in ax.get_ylabel()

    ax = build_figure([a, b], smooth=0.9).axes[0]
    assert ax.get_title() == "2 runs"
    for name in ("lora_a_64", "lora_b_64"):
        raw, smoothed, val = lines_of(ax, name)
        assert raw.get_alpha() < 1 and raw.get_linewidth() < smoothed.get_linewidth()
        assert list(smoothed.get_ydata()) == pytest.approx(ema(list(raw.get_ydata()), 0.9))
        assert list(smoothed.get_ydata()) != pytest.approx(list(raw.get_ydata()))
        assert val.get_linestyle() == "--" and val.get_label() == f"{name} val"

    ax = build_figure([a], labels=["mine"], smooth=0).axes[0]      # --smooth 0: the raw curve only
    assert ax.get_title() == "mine" and [ln.get_label() for ln in ax.get_lines()] == ["mine train", "mine val"]
