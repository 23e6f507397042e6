"""scripts/study.py: every study's dry run (the same base, seed and budget for each arm), one tiny study end to
end (two LoRA arms on a tiny checkpoint, scored on the benchmark fixture and two generation questions),
its re-run kept aside and a failing arm stopping it in one line, and a bad --study name.

    pytest tests/test_study.py
"""
import json

import pytest

from cli import run_cli
from evaluation.studies import STUDIES
from factories import REPO, make_checkpoint, run_python, write_chat, write_jsonl
from scripts import study



@pytest.fixture
def inputs(tmp_path):
    """(a tiny base checkpoint, tiny chat data)."""
    return make_checkpoint(tmp_path / "base" / "tiny_64.pth"), write_chat(tmp_path / "chat.jsonl", n=24)


def test_dry_run_prints_every_arm_with_the_same_base_seed_and_budget(tmp_path, bench_cache, inputs, capsys):
    base, data = inputs
    out = tmp_path / "out"
    for name, s in STUDIES.items():
        study.main(["--study", name, "--dry_run", "--base", str(base), "--data_path", str(data), "--seed", "7",
                    "--minutes", "0.5", "--tasks", "arc_easy,hellaswag", "--out_dir", str(out)])
        text = capsys.readouterr().out
        cmds = [line[4:] for line in text.splitlines() if line.startswith("  $ ")]
        assert len(cmds) == sum(a.script is not None for a in s.arms), text
        assert all(f"arm {a.name}:" in text for a in s.arms)
        for arm, cmd in zip([a for a in s.arms if a.script], cmds):
            assert f"--base {base}" in cmd and f"--data_path {data}" in cmd, cmd
            assert "--seed 7 " in cmd and "--max_minutes 0.5 " in cmd, cmd
            assert f"--out_dir {out / 'study' / name / arm.name}" in cmd
            assert all(str(f) in cmd.split("--out_dir")[1] for f in arm.flags)     # the arm's own flags
    assert not out.exists()                                  # a dry run writes nothing


def test_tiny_study_end_to_end_then_rerun_kept_and_failed_arm(tmp_path, bench_cache, inputs):
    base, data = inputs
    out = tmp_path / "out"
    argv = ["scripts/study.py", "--study", "loss_on", "--base", str(base), "--data_path", str(data),
            "--minutes", "1", "--max_steps", "3", "--tasks", "arc_easy,hellaswag", "--limit", "2",
            "--gen", "music,identity", "--gen_limit", "2", "--device", "cpu", "--out_dir", str(out)]
    env = {"TINYMIND_CACHE": str(bench_cache)}
    res = run_python(argv, REPO, env)
    folder = out / "study" / "loss_on"
    for ext in ("md", "csv", "json", "png"):
        assert (folder / "eval" / f"study_loss_on.{ext}").is_file(), ext
    assert (folder / "loss_curves.png").stat().st_size > 1000
    for arm in ("assistant", "all"):
        assert (folder / arm / "lora" / f"{arm}_64.pth").is_file()
        assert (folder / arm / "logs" / f"{arm}_64.jsonl").is_file() and (folder / arm / "train.log").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["study"]         # nothing else in the user's out/
    table = json.loads((folder / "eval" / "study_loss_on.json").read_text())
    assert table["models"] == ["assistant", "all"]
    assert {(t["task"], t["metric"]) for t in table["table"]} >= {("arc_easy", "acc"), ("hellaswag", "acc_norm"),
                                                                  ("music", "f1"), ("identity", "pass")}
    assert all(str(t["n"]) == "2" for t in table["table"])
    readme = (folder / "README.md").read_text()
    assert "--loss_on all" in readme and "--loss_on assistant" in readme and "| arm | what | steps |" in readme
    assert "| assistant | LoRA, --loss_on assistant (the default) | 3 |" in readme
    assert "study_loss_on" in res.stdout

    # a re-run keeps the finished study aside; its first arm fails on a broken data line: one line, exit 2
    write_jsonl(data, ["{not json"] + [json.loads(s) for s in data.read_text().splitlines()[1:]])
    res = run_python(argv, REPO, env, check=False)
    assert res.returncode == 2, res.stderr[-2000:]
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: arm assistant of study loss_on failed (exit 2: error: "), err
    assert err[0].endswith(f"its log: {folder / 'assistant' / 'train.log'}")
    kept = list((out / "study" / "previous").glob("loss_on-*"))
    assert len(kept) == 1 and (kept[0] / "eval" / "study_loss_on.md").is_file()
    assert not (folder / "eval").exists()


def test_bad_study_name_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(study.main, ["--study", "nope", "--out_dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "--study: invalid choice: 'nope'" in err
    assert not list(tmp_path.iterdir())
