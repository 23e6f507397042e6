"""Tests for scripts/plot_runs.py: a good log plots; anything else is one line naming the file.

    python -m pytest tests/test_plot_runs.py -q
"""
import json
import subprocess
import sys

import pytest

from factories import REPO

CONFIG = json.dumps({"step": 0, "config": {"lr": 1e-3}})
GOOD = "".join(json.dumps({"step": s, "loss": 1 / s}) + "\n" for s in range(1, 4)) + json.dumps({"step": 3, "val_loss": 0.5})


def plot(*argv):
    return subprocess.run([sys.executable, "scripts/plot_runs.py", *map(str, argv)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_a_log_with_a_config_line_plots(tmp_path):
    log = tmp_path / "run.jsonl"
    log.write_text(CONFIG + "\n" + GOOD + "\n")
    r = plot(log, "-o", tmp_path / "p.png")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("text, says", [
    ("", "is empty"),
    ("\n\n", "is empty"),
    (CONFIG + "\n", "has no loss rows"),
    ('{"name": "x"}\n', '"step" a number'),
    ('{"step": 1, "loss": "high"}\n', '"loss" a number'),
    ('{"step": 1, "val_loss": null}\n', '"val_loss" a number'),
    ('{"step": "one", "loss": 1.0}\n', '"step" a number'),
    ('{"step": true, "loss": 1.0}\n', '"step" a number'),
    ('[1, 2]\n', "a JSON object"),
    ("step,loss\n1,2\n", "not JSON"),
])
def test_not_a_training_log_is_one_line_naming_the_file(tmp_path, text, says):
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text(GOOD)
    bad.write_text(text)
    r = plot(good, bad, "-o", tmp_path / "p.png")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: {bad}") and says in lines[0] and "not a TinyMind training log" in lines[0]
    assert not (tmp_path / "p.png").exists()


def test_output_must_be_a_png(tmp_path):
    log = tmp_path / "run.jsonl"
    log.write_text(GOOD)
    r = plot(log, "-o", tmp_path / "p.jpg")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and ".png" in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.jsonl"]


@pytest.mark.parametrize("weight", ["1", "-0.1", "nan"])
def test_smooth_must_be_in_0_1(tmp_path, weight):
    log = tmp_path / "run.jsonl"
    log.write_text(GOOD)
    r = plot(log, "-o", tmp_path / "p.png", "--smooth", weight)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "--smooth must be in [0, 1)" in lines[0], lines
    assert not (tmp_path / "p.png").exists()


def test_smooth_reaches_the_figure(tmp_path, monkeypatch):
    from scripts import plot_runs
    log = tmp_path / "run.jsonl"
    log.write_text(GOOD)
    seen = []
    monkeypatch.setattr(plot_runs, "plot_curves", lambda logs, png, labels, smooth, metric=None: seen.append(smooth))
    plot_runs.main([str(log), "-o", str(tmp_path / "p.png"), "--smooth", "0"])
    plot_runs.main([str(log), "-o", str(tmp_path / "p.png")])
    assert seen == [0.0, 0.9]
