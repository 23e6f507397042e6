"""scripts/study.py: every study's dry run (the same base, seed and budget for each arm), one tiny study end to
end (two LoRA arms on a tiny checkpoint, scored on the benchmark fixture and two generation questions),
its re-run kept aside and a failing arm stopping it in one line, and a bad --study name.

    pytest tests/test_study.py
"""
import json
import subprocess
import sys

import pytest
import torch

from core.cli import run_cli
from pipelines.study_arms import STUDIES
from factories import REPO, make_checkpoint, run_python, write_chat, write_jsonl
from pipelines import study



@pytest.fixture
def inputs(tmp_path):
    """(a tiny base checkpoint, tiny chat data)."""
    return make_checkpoint(tmp_path / "base" / "tiny_64.pth"), write_chat(tmp_path / "chat.jsonl", n=24)


def test_dry_run_prints_every_arm_with_the_same_base_seed_and_budget(tmp_path, bench_cache, inputs, capsys):
    _, data = inputs
    base = make_checkpoint(tmp_path / "wide" / "tiny_64.pth", num_key_value_heads=4)    # rank 64 fits its k_proj
    out = tmp_path / "out"
    for name, s in STUDIES.items():
        study.main(["--study", name, "--dry_run", "--base", str(base), "--data_path", str(data), "--seed", "7",
                    "--minutes", "0.5", "--tasks", "arc_easy,hellaswag", "--out_dir", str(out),
                    "--pairs", str(write_pairs(tmp_path / "pairs.jsonl"))])
        text = capsys.readouterr().out
        arms_text = text[text.index("\narm "):]                   # the shares' commands (ifd) come first
        cmds = [line[4:] for line in arms_text.splitlines()               # each arm's first stage; the dpo
                if line.startswith("  $ ") and "train_dpo.py" not in line]     # study's DPO stages: their own test
        assert len(cmds) == sum(a.script is not None for a in s.arms), text
        assert all(f"arm {a.name}:" in text for a in s.arms)
        for arm, cmd in zip([a for a in s.arms if a.script], cmds):
            own = out / "study" / name / "data" / f"{arm.data}.jsonl" if arm.data else data
            assert f"--base {base}" in cmd and f"--data_path {own} " in cmd, cmd
            assert "--seed 7 " in cmd and "--max_minutes 0.5 " in cmd, cmd
            assert f"--out_dir {out / 'study' / name / arm.name}" in cmd
            assert all(str(f) in cmd.split("--out_dir")[1] for f in arm.flags)     # the arm's own flags
    assert not out.exists()                                  # a dry run writes nothing


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_setting_one_arm_cannot_take_stops_the_study_before_any_arm_trains(tmp_path, bench_cache, inputs, capsys,
                                                                             dry_run):
    """The tiny base's k_proj is 32 wide: the lora_rank study's rank-64 arm cannot train on it. Its trainer
    would say so after the three other arms had trained; the study (and its dry run) says it first."""
    base, data = inputs
    out = tmp_path / "out"
    earlier = out / "study" / "lora_rank" / "rank4" / "train.log"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("an earlier run")
    with pytest.raises(SystemExit) as e:
        run_cli(study.main, ["--study", "lora_rank", "--base", str(base), "--data_path", str(data), "--tasks", "",
                             "--gen", "music", "--device", "cpu", "--out_dir", str(out)] + ["--dry_run"] * dry_run)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: arm rank64 of study lora_rank: --lora_rank 64: LoRA rank 64 is above the width "
                          "of the layers it adapts (model.layers.0.self_attn.k_proj is 32x64); use at most 32"), err
    assert sorted(p.name for p in (out / "study").iterdir()) == ["lora_rank"]       # nothing moved, nothing run
    assert earlier.read_text() == "an earlier run" and not (out / "study" / "lora_rank" / "rank8").exists()


def test_a_rerun_leaves_the_temporaries_of_a_killed_arm_behind(tmp_path):
    """A study killed mid-arm leaves its trainer's temporaries (.NAME.tmpPID, a file or a folder); the
    re-run moves the earlier study to out/study/previous/ without those of dead processes (a live one's
    stays: it may still be writing)."""
    folder = tmp_path / "out" / "study" / "loss_on"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = [folder / "assistant" / "lora" / f".assistant_64.pth.tmp{dead.pid}",
            folder / "assistant" / "logs" / f".assistant_64.jsonl.live.tmp{dead.pid}",
            folder / "assistant" / "state" / "assistant_64" / f".step_00000010.tmp{dead.pid}" / "model.pt"]
    for f in left:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("half")
    finished = folder / "assistant" / "lora" / "assistant_64.pth"
    finished.write_text("done")
    live = folder / "all" / "lora" / f".all_64.pth.tmp{study.os.getpid()}"
    live.parent.mkdir(parents=True)
    live.write_text("being written")
    study.keep_earlier({"folder": folder, "prepare": []})
    kept = list((tmp_path / "out" / "study" / "previous").iterdir())
    assert len(kept) == 1 and not folder.exists()
    names = sorted(p.relative_to(kept[0]).as_posix() for p in kept[0].rglob("*") if p.is_file())
    assert names == ["all/lora/" + live.name, "assistant/lora/assistant_64.pth"], names


def write_pairs(path, n=12):
    rows = [{"prompt": f"question {i} about music", "chosen": f"the right answer {i}", "rejected": f"wrong {i}"}
            for i in range(n)]
    return write_jsonl(path, rows)


def test_the_dpo_study_takes_the_same_steps_with_a_dpo_stage_that_continues_the_lora(tmp_path, bench_cache, inputs):
    """LoRA for 3 of 4 steps then DPO of that adapter for 1, against LoRA for 4: both scored in one table."""
    base, data = inputs
    out, pairs = tmp_path / "out", write_pairs(tmp_path / "pairs.jsonl")
    argv = ["scripts/study.py", "--study", "dpo", "--base", str(base), "--data_path", str(data), "--pairs", str(pairs),
            "--minutes", "1", "--max_steps", "4", "--tasks", "arc_easy", "--limit", "2", "--gen", "identity",
            "--gen_limit", "2", "--device", "cpu", "--out_dir", str(out)]
    run_python(argv, REPO, {"TINYMIND_CACHE": str(bench_cache)})
    folder = out / "study" / "dpo"
    logs = {name: [json.loads(x) for x in (folder / arm / "logs" / f"{name}_64.jsonl").read_text().splitlines()]
            for arm, name in (("lora", "lora"), ("lora_dpo", "lora_dpo_lora"), ("lora_dpo", "lora_dpo"))}
    steps = {name: max(r["step"] for r in rows) for name, rows in logs.items()}
    assert steps == {"lora": 4, "lora_dpo_lora": 3, "lora_dpo": 1}
    assert "accuracy" in logs["lora_dpo"][-2] or any("accuracy" in r for r in logs["lora_dpo"])
    dpo = torch.load(folder / "lora_dpo" / "lora" / "lora_dpo_64.pth", weights_only=True)
    assert dpo["meta"]["stage"] == "dpo" and dpo["meta"]["from_lora"].endswith("lora_dpo_lora_64.pth")
    assert json.loads((folder / "eval" / "study_dpo.json").read_text())["models"] == ["lora", "lora_dpo"]
    assert "| lora_dpo |" in (folder / "README.md").read_text() and "3 + 1 DPO" in (folder / "README.md").read_text()


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
    assert "--loss_on all" in readme and "--loss_on assistant" in readme and "| arm | what | data | steps |" in readme
    assert f"| assistant | LoRA, --loss_on assistant (the default) | {data} | 3 |" in readme
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


def test_ifd_study_trains_each_arm_on_its_share_from_one_scoring(tmp_path, bench_cache):
    """The ifd study end to end on a tiny pretrained base: cherry's scores make the top, bottom and random
    shares (the same size), each arm trains on its own file for the same steps, validation on one file for
    all, and the identity test (sft data teaches none) is held to the identity its file asks for."""
    base = make_checkpoint(tmp_path / "base" / "pretrain_64.pth", stage="pretrain")
    data, val = write_chat(tmp_path / "sft.jsonl", n=40), write_chat(tmp_path / "val.jsonl", n=6, seed=1)
    out = tmp_path / "out"
    argv = ["scripts/study.py", "--study", "ifd", "--base", str(base), "--data_path", str(data), "--val_data",
            str(val), "--ratio", "0.25", "--max_steps", "2", "--tasks", "", "--gen", "music,identity",
            "--gen_limit", "2", "--device", "cpu", "--out_dir", str(out)]
    res = run_python(argv, REPO, {"TINYMIND_CACHE": str(bench_cache)})
    folder = out / "study" / "ifd"
    scores = {json.loads(x)["line"]: json.loads(x)["ifd"]
              for x in (folder / "data" / "top.jsonl.scores.jsonl").read_text().splitlines()}
    assert sorted(scores) == list(range(1, 41))                            # every sample scored once
    rows = data.read_text().splitlines()
    share = {}
    for name in ("top", "bottom", "random"):
        lines = (folder / "data" / f"{name}.jsonl").read_text().splitlines()
        assert len(lines) == 10, name                                      # 25% of 40, each the same size
        share[name] = [rows.index(x) + 1 for x in lines]
    below = sorted(v for v in scores.values() if v < 1)
    assert sorted(scores[n] for n in share["top"]) == below[-10:]          # the highest ifd under 1
    assert sorted(scores[n] for n in share["bottom"]) == below[:10]
    assert set(share["random"]) not in (set(share["top"]), set(share["bottom"]))
    for arm in ("top", "random", "bottom", "all"):
        log = [json.loads(x) for x in (folder / arm / "logs" / "full_sft_64.jsonl").read_text().splitlines()]
        cfg = log[0]["config"]
        want = data if arm == "all" else folder / "data" / f"{arm}.jsonl"
        assert (cfg["data_path"], cfg["val_data"], cfg["max_steps"]) == (str(want), str(val), 2), arm
    table = json.loads((folder / "eval" / "study_ifd.json").read_text())
    assert table["models"] == ["top", "random", "bottom", "all"]
    ident = [t for t in table["table"] if t["task"] == "identity"]
    assert ident and all(v is not None for t in ident for v in t["values"].values()), ident
    rep = json.loads((folder / "eval" / "gen_identity_top.json").read_text())
    assert rep["identity_source"] == "the identity identity_test.jsonl asks for"
    readme = (folder / "README.md").read_text()
    assert "| top | full SFT on the top --ratio by IFD" in readme and "data/top.jsonl (10 samples, mean ifd " in readme
    assert "# bottom: python scripts/select_data.py select" in readme and "--pick bottom" in readme
    assert "study_ifd" in res.stdout

    # a re-run with the same shares' commands reuses them (nothing is selected again); a --ratio whose top
    # and bottom shares would overlap is one line, before any arm trains
    before = {n: (folder / "data" / f"{n}.jsonl").read_text() for n in ("top", "bottom", "random")}
    again = run_python(argv, REPO, {"TINYMIND_CACHE": str(bench_cache)})
    assert "reusing its data/" in again.stdout and "=== the top share" not in again.stdout
    assert all(f"the {n} step: " in again.stdout for n in ("top", "bottom", "random"))
    assert {n: (folder / "data" / f"{n}.jsonl").read_text() for n in before} == before
    assert (folder / "all" / "full_sft_64.pth").is_file()
    wide = [a if a != "0.25" else "0.6" for a in argv]
    res = run_python(wide, REPO, {"TINYMIND_CACHE": str(bench_cache)}, check=False)
    err = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(err) == 1 and err[0].startswith("error: --ratio: the top and bottom shares "
                                                                        "of 24 samples each need twice"), err
    assert not (folder / "top").exists()


def test_ifd_with_a_scorer_scores_once_then_picks_three_shares(tmp_path, bench_cache, inputs, capsys):
    base, data = inputs
    out, scorer = tmp_path / "out", make_checkpoint(tmp_path / "scorer_64.pth", seed=3)
    study.main(["--study", "ifd", "--dry_run", "--base", str(base), "--data_path", str(data), "--ratio", "0.5",
                "--scorer", str(scorer), "--scorer_dtype", "bfloat16", "--tasks", "arc_easy", "--out_dir", str(out)])
    text = capsys.readouterr().out
    shares = text[text.index("first the arms' shares (12 samples each"):text.index("\narm ")]
    cmds = [line[4:] for line in shares.splitlines() if line.startswith("  $ ")]
    folder = out / "study" / "ifd" / "data"
    assert cmds[0].startswith(f"python scripts/select_data.py score --data_path {data} --ckpt {scorer} ")
    assert "--dtype bfloat16" in cmds[0] and cmds[0].endswith(f"-o {folder / 'scores.jsonl'}")
    for cmd, pick in zip(cmds[1:], ("", " --pick bottom", " --pick random --keep_above_one --seed 42")):
        assert cmd.startswith("python scripts/select_data.py select ") and f"--scores {folder / 'scores.jsonl'}" in cmd
        assert "--count 12 " in cmd and f"{pick} -o " in cmd, cmd
    assert len(cmds) == 4 and "cherry" not in shares
    with pytest.raises(SystemExit) as e:
        run_cli(study.main, ["--study", "loss_on", "--base", str(base), "--scorer", str(scorer), "--dry_run",
                             "--tasks", "arc_easy", "--out_dir", str(out)])
    assert e.value.code == 2 and capsys.readouterr().err.strip() == \
        "error: --scorer: study loss_on selects no data (the ifd study does)"


def test_bad_study_name_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(study.main, ["--study", "nope", "--out_dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "--study: invalid choice: 'nope'" in err
    assert not list(tmp_path.iterdir())


def test_the_dpo_studys_stages_split_the_steps_and_need_two(tmp_path, bench_cache, inputs, capsys):
    from pipelines.study_arms import stage_steps
    lora, lora_dpo = STUDIES["dpo"].arms
    assert [stage_steps(lora_dpo, n) for n in (2, 3, 4, 160)] == [(1, 1), (2, 1), (3, 1), (120, 40)]
    assert stage_steps(lora, 160) == (160, 0)
    base, data = inputs
    code = 0
    try:
        run_cli(study.main, ["--study", "dpo", "--dry_run", "--base", str(base), "--data_path", str(data), "--pairs",
                             str(write_pairs(tmp_path / "pairs.jsonl")), "--max_steps", "1", "--out_dir",
                             str(tmp_path / "out")])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and "--max_steps 1: the dpo study splits its steps between two stages" in err
