"""A comparison study: several arms trained from the same base with the same data, seed and time budget,
scored on the same benchmarks and generation tests, in one report (the arms: pipelines/study_arms.py).

    python scripts/study.py                                  # forgetting: the base before and after the music LoRA
    python scripts/study.py --study loss_on --dry_run        # the arms' commands, nothing run
    python scripts/study.py --study lora_rank --minutes 5 --tasks arc_easy --limit 300 --gen music
    python scripts/study.py --study ifd                      # Cherry selection: top 10% by IFD vs random, bottom, all
    python scripts/study.py --study dpo                      # LoRA alone vs LoRA then DPO, the same steps

Studies: forgetting (the default), loss_on, system_prompt, lora_vs_full, lora_rank, ifd, dpo. The default took 15m40s
on the project's 2-core CPU with SmolLM2-135M as the base: 12 minutes of LoRA training, then each arm's
benchmarks (--limit 150 items of each --tasks, 0-shot; run `python scripts/eval_bench.py --fetch` once) and
generation tests (--gen, greedy, the first --gen_limit questions). Every arm runs the real trainer command
with --max_minutes and its own --out_dir out/study/{study}/{arm}; the user's out/ is never touched.

ifd: from a pretrained base (the quickstart's out/scratch/pretrain_*.pth on a CPU), full SFT for the same
--max_steps on the top --ratio of dataset/sft.jsonl by IFD (select_data.py cherry), on a random share of
the same size, on the bottom share, and on all of it; validation loss on dataset/sft_val.jsonl. The shares
are written first into out/study/ifd/data/ (with their scores, stats and histograms).

Writes out/study/{study}/: README.md (what ran, each arm's command, steps, losses, the table),
eval/study_{study}.md/.csv/.json/.png (evaluation/report.py), loss_curves.png (every trained arm's curves),
eval/bench_*.json and gen_*.json (every item), {arm}/train.log and {arm}/logs/ (each run's output and log).

A re-run first moves the earlier out/study/{study}/ whole to out/study/previous/{study}-{time}/ (after every
check has passed, before the first arm trains): nothing finished is lost. A failed arm stops the study with
one line naming it and its train.log, which stays where the study was being written.
"""
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from core.cli import ArgumentParser, check_device, check_range, run_cli
from evaluation import benchmarks, report
from evaluation.gen_tasks import evaluate_gen, load_gen_tasks
from pipelines.study_arms import (DEFAULT_STUDY, STUDIES, arm_command, arm_data, arm_output, check_arm,
                                prepare_commands, shown, step_output, then_command)
from pipelines.study_report import summary
from evaluation.suite import evaluate_models
from checkpoint import layout
from checkpoint.adapter import is_adapter
from core.atomic import check_writable, clean_stale_temps, move, write_text
from checkpoint.pth import config_from_dict, read_pth
from core.errors import UserError
from inference.load import find_model, load_for_inference
from inference.precision import PRECISIONS
from pipelines.clock import fmt_time
from selection.samples import read_samples
from selection.select import side_paths
from trainer.args import TrainConfig
from trainer.runlog import plot_curves

ROOT = layout.repo_root()

TASKS = "arc_easy,hellaswag,piqa"
COMMON_DEFAULTS = {"data_path": "dataset/music.jsonl", "val_data": "", "minutes": 12.0, "max_steps": 0,
                   "gen": "music,identity", "pairs": "dataset/music_pairs.jsonl"}                  # a study's own (Study.defaults) come first


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--study", default=DEFAULT_STUDY, choices=tuple(STUDIES), help="which study (default %(default)s)")
    p.add_argument("--base", default="", help="the checkpoint every arm starts from (default: what "
                   "train_lora.py takes: out/full_sft_*.pth, else the imported SmolLM2; the ifd study: the "
                   "pretrained out/pretrain_*.pth, else the quickstart's out/scratch/pretrain_*.pth)")
    p.add_argument("--data_path", default=None, help="every arm's training data (default dataset/music.jsonl; "
                                                     "the ifd study: dataset/sft.jsonl, the set it selects from)")
    p.add_argument("--val_data", default=None, help="every arm's validation file (default: the trainer's own; "
                                                    "the ifd study: dataset/sft_val.jsonl)")
    p.add_argument("--pairs", default=None, help="the dpo study: the preference pairs of its DPO stage "
                                                 "(default dataset/music_pairs.jsonl)")
    p.add_argument("--ratio", type=float, default=0.1, help="the ifd study: the share each selected arm keeps "
                                                            "(of every sample; default 0.1)")
    p.add_argument("--scorer", default="", help="the ifd study: the model whose IFD picks the shares, any --ckpt "
                   "of select_data.py (smollm2, a .pth, ...; Superfiltering's way); default Cherry's: the base after "
                   "a brief SFT on a clustered sample")
    p.add_argument("--scorer_dtype", default="float32", choices=PRECISIONS, help="--scorer's precision")
    p.add_argument("--minutes", type=float, default=None, help="training minutes per arm (--max_minutes; default "
                                                               "12, the ifd study 60)")
    p.add_argument("--max_steps", type=int, default=None, help="also stop each arm after this many steps (0: the "
                                                               "time budget alone; default 0, the ifd study 600)")
    p.add_argument("--tasks", default=TASKS, help="benchmarks, comma-separated ('' for none)")
    p.add_argument("--limit", type=int, default=150, help="the first N items of each benchmark")
    p.add_argument("--gen", default=None, help="generation tests, comma-separated: identity, music or a .jsonl "
                                               "('' for none; default music,identity)")
    p.add_argument("--gen_limit", type=int, default=32, help="the first N questions of each generation test")
    p.add_argument("--seed", type=int, default=42, help="every arm's training seed (and the random share's)")
    p.add_argument("--device", default="", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out_dir", default=None, help="the out folder (default $TINYMIND_OUT_DIR, else <repo>/out); "
                                                   "the study goes to {out_dir}/study/{study}/")
    p.add_argument("--dry_run", action="store_true", help="check everything, print the arms' commands, run nothing")
    args = p.parse_args(argv)
    given = dict(STUDIES[args.study].defaults)
    for flag, value in {**COMMON_DEFAULTS, **given}.items():
        if getattr(args, flag) is None:
            setattr(args, flag, value)
    check_range("--minutes", args.minutes, 0.0, 1e6, low_open=True)
    check_range("--max_steps", args.max_steps, 0, integer=True)
    check_range("--ratio", args.ratio, 0.0, 1.0, low_open=True)
    check_range("--limit", args.limit, 1, integer=True)
    check_range("--gen_limit", args.gen_limit, 1, integer=True)
    check_range("--seed", args.seed, 0, 2**32 - 1, integer=True)
    check_device(args.device)
    args.tasks = benchmarks.check_task_names([t for t in args.tasks.split(",") if t])
    args.gen = [g for g in args.gen.split(",") if g]
    if not args.tasks and not args.gen:
        raise UserError("--tasks and --gen are both empty: nothing to score the arms on")
    return args


def find_base(args, out):
    """--base, else the study's kind of base: train_lora.py's choice (checkpoint.layout.find_lora_base), or a
    pretrained checkpoint (out/, else the quickstart's out/scratch/) -> (path, why, its model config)."""
    if args.base:
        base, why = layout.resolve_input(args.base), "--base"
        if not base.is_file():
            raise UserError(f"--base {args.base}: file not found")
    elif STUDIES[args.study].base == "pretrain":
        scratch = Path(out) / "scratch"
        where = out if layout.candidates(out, "pretrain") or not layout.candidates(scratch, "pretrain") else scratch
        base = layout.find_stage_checkpoint(where, "pretrain")
        why = f"the pretrained checkpoint in {shown(where)}/; --base picks another"
    else:
        base, why = layout.find_lora_base(out)
    ckpt = read_pth(base, mmap=True)
    if is_adapter(ckpt) or not isinstance(ckpt, dict) or "config" not in ckpt:
        raise UserError(f"{base}: not a model checkpoint (an adapter?); every arm needs a full checkpoint as --base")
    return base.resolve(), why, ckpt["config"]


def make_plan(args):
    """Everything checked before any work: the base, the data, the benchmark items and test files, the
    output folder. -> dict of what the study runs."""
    out = layout.out_dir(args.out_dir)
    study = STUDIES[args.study]
    folder = layout.study_dir(out, args.study)
    check_writable(folder, folder=True)
    base, why, config = find_base(args, out)
    data = layout.resolve_input(args.data_path)
    val = layout.resolve_input(args.val_data) if args.val_data else ""
    pairs = layout.resolve_input(args.pairs) if any(a.then is not None for a in study.arms) else ""
    for flag, f in (("--data_path", data), ("--val_data", val), ("--pairs", pairs)):
        if f and not f.is_file():
            raise UserError(f"{flag} {f}: file not found")
    if pairs and args.max_steps < 2:
        raise UserError(f"--max_steps {args.max_steps}: the {study.name} study splits its steps between two stages; "
                        "give at least 2")
    for t in args.tasks:
        benchmarks.load_task(t)                        # items not fetched: one line saying how
    gen = load_gen_tasks(args.gen, args.gen_limit) if args.gen else []
    seq = TrainConfig().max_seq_len                                     # the trainer's default
    window = score_len = min(seq, config.get("max_position_embeddings", seq))
    samples = len(read_samples(data)) if any(a.data for a in study.arms) else 0    # a bad line: one line, now
    count = round(samples * args.ratio)
    if samples and count < 1:
        raise UserError(f"--ratio {args.ratio}: keeps no sample of the {samples} in {data}")
    if args.scorer:
        if not samples:
            raise UserError(f"--scorer: study {args.study} selects no data (the ifd study does)")
        kind, found = find_model(out, args.scorer)                    # not found: one line, now
        if kind == "pth":
            score_len = min(window, read_pth(found, mmap=True).get("config", {}).get("max_position_embeddings", seq))
        args.scorer = shown(found)
    prepare = prepare_commands(study, base, data, folder, samples, count, args.seed, score_len, args.device,
                               args.scorer, args.scorer_dtype)
    arms = []
    for arm in study.arms:
        d = folder / arm.name
        cut = window if window < seq else 0
        cmd = arm_command(arm, base, arm_data(arm, data, folder), d, args.minutes, args.seed, args.device,
                          args.max_steps, val, cut)
        first = arm_output(arm, base, d, config, first=True)
        arms.append({"arm": arm, "dir": d, "output": arm_output(arm, base, d, config), "cmd": cmd, "first": first,
                     "then": then_command(arm, first, pairs, d, args.minutes, args.seed, args.device,
                                          args.max_steps, cut)})
    check_arms(study, arms, base, config)
    return {"study": study, "out": out, "folder": folder, "base": base, "why": why, "data": data, "val": val,
            "count": count, "prepare": prepare, "gen": gen, "arms": arms, "name": f"study_{args.study}"}


def check_arms(study, arms, base, config):
    """Every arm's trainer command checked as its trainer will check it (study_arms.check_arm), all before
    the first arm trains: a setting one arm cannot take (rank 64 on a base whose layers are narrower) is one
    line naming the arm, not a failure after the others have trained."""
    model_config = config_from_dict(config, base)
    for a in arms:
        for cmd in filter(None, (a["cmd"], a["then"])):
            try:
                check_arm(a["arm"], cmd, base, model_config)
            except UserError as e:
                raise UserError(f"arm {a['arm'].name} of study {study.name}: {e}; nothing was run") from None


def describe_plan(args, plan):
    tests = ([f"benchmarks {', '.join(args.tasks)} (first {args.limit} items, 0-shot)"] if args.tasks else []) + \
            ([f"generation {', '.join(args.gen)} (first {args.gen_limit} questions, greedy)"] if args.gen else [])
    lines = [f"study {plan['study'].name}: {plan['study'].question}",
             f"base {shown(plan['base'])} ({plan['why']})",
             f"data {shown(plan['data'])}; seed {args.seed}; {args.minutes:g} min of training per arm"
             + (f" (at most {args.max_steps} steps)" if args.max_steps else ""),
             f"outputs in {shown(plan['folder'])}/"]
    if plan["prepare"]:
        lines.append(f"first the arms' shares ({plan['count']:,} samples each, --ratio {args.ratio:g}):")
        lines += [f"  $ {shlex.join(cmd)}" for _, cmd in plan["prepare"]]
    for a in plan["arms"]:
        lines.append(f"arm {a['arm'].name}: {a['arm'].what}")
        lines += [f"  $ {shlex.join(cmd)}" for cmd in (a["cmd"], a["then"]) if cmd]
    lines.append(f"then every arm: {' and '.join(tests)}")
    if plan["folder"].exists():
        kept = shown(plan["folder"].parent / "previous")
        lines.append(f"the earlier run in {shown(plan['folder'])}/ moves to {kept}/ first")
    return "\n".join(lines)


def keep_earlier(plan):
    """An earlier run of this study moves whole to out/study/previous/{study}-{time} (core.atomic.move)."""
    folder = plan["folder"]
    if not folder.exists():
        return
    clean_killed(folder)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(folder.stat().st_mtime))
    kept = layout.previous_dir(folder.parent, folder.name, stamp)
    kept = kept if not kept.exists() else kept.with_name(f"{kept.name}-{time.time_ns()}")
    kept.parent.mkdir(parents=True, exist_ok=True)
    move(folder, kept)
    print(f"kept the earlier {folder.name} study in {kept}", flush=True)
    done = kept / "data" / "commands.json"
    if plan["prepare"] and done.is_file() and json.loads(done.read_text()) == [c for _, c in plan["prepare"]]:
        shutil.copytree(kept / "data", plan["folder"] / "data")        # the same shares: what is done stays done
        print("its shares were made by the same commands: reusing its data/ (finished steps are not run again)")


def clean_killed(folder):
    """Remove what killed processes left anywhere under folder (an arm's trainer killed mid-save leaves its
    temporary; core.atomic.clean_stale_temps, folder by folder), so that none is kept with the run."""
    for root, dirs, _ in os.walk(folder):
        clean_stale_temps(root)
        dirs[:] = [d for d in dirs if os.path.isdir(os.path.join(root, d))]


def run_logged(cmd, log, what):
    """Run a command from the repository root, its output shown and kept in log -> (exit code, seconds,
    its last 'error:' line or "")."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"\n=== {what}\n$ {shlex.join(cmd)}", flush=True)
    t, last = time.time(), ""
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.Popen([sys.executable, *cmd[1:]], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            sys.stdout.write(line)
            f.write(line)
            last = line.strip() or last
        rc = proc.wait()
    return rc, time.time() - t, (last if last.startswith("error:") else "")


def prepare_shares(plan):
    """Write the arms' own shares of the data (pipelines.study_arms.prepare_commands), each step's output in
    data/{step}.log -> seconds. A failure is one line naming the step and its log."""
    t, data = time.time(), plan["folder"] / "data"
    data.mkdir(parents=True, exist_ok=True)
    write_text(data / "commands.json", json.dumps([c for _, c in plan["prepare"]], indent=1) + "\n")
    for step, cmd in plan["prepare"]:
        out, log = step_output(plan["folder"], step), data / f"{step}.log"
        if out.is_file() and (step == "scores" or side_paths(out)[0].is_file()):
            print(f"the {step} step: {shown(out)} is there from the earlier run", flush=True)
            continue
        rc, _, err = run_logged(cmd, log, f"the {step} share" if step != "scores" else "the scores")
        if rc or not out.is_file():
            raise UserError(f"preparing the {step} step of study {plan['study'].name} failed (exit {rc}"
                            + (f": {err}" if err else "") + f"); its log: {log}")
    top = json.loads(side_paths(step_output(plan["folder"], "top"))[0].read_text(encoding="utf-8"))
    if top["selected"] < plan["count"] or top["eligible"] < 2 * plan["count"]:
        raise UserError(f"--ratio: the top and bottom shares of {plan['count']:,} samples each need twice that "
                        f"many with ifd < 1, and {top['eligible']:,} have it; give a smaller --ratio "
                        f"(the shares: {shown(data)})")
    return time.time() - t


def train_arm(plan, a):
    """Run an arm's trainer command (its output shown and kept in {arm}/train.log) -> seconds it took.
    A failure is one line naming the arm and its log."""
    total = 0.0
    for cmd, log, output in ((a["cmd"], a["dir"] / "train.log", a["first"]),
                             (a["then"], a["dir"] / "train_dpo.log", a["output"])):
        if not cmd:
            continue
        rc, seconds, err = run_logged(cmd, log, f"arm {a['arm'].name}: {a['arm'].what}")
        if rc != 0 or not output.is_file():
            why = (f"exit {rc}" + (f": {err}" if err else "")) if rc else f"it left no {output.name}"
            raise UserError(f"arm {a['arm'].name} of study {plan['study'].name} failed ({why}); its log: {log}")
        total += seconds
    return total


def score_arms(args, plan):
    """Every arm's model (labelled with the arm's name) on the benchmarks and generation tests -> rows.
    They are loaded together, so an arm that records no identity (the untouched base) is held to the one
    another arm's training data taught, and in a study none of whose arms is taught one (Study.file_identity:
    the ifd study's full SFT on sft.jsonl), to the one the identity test asks for (evaluation.gen_tasks)."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    models = []
    for a in plan["arms"]:
        m = load_for_inference(ckpt=a["output"], device=device, out=plan["out"])
        m.label = a["arm"].name
        print(f"scoring arm {a['arm'].name}: {shown(a['output'])}", flush=True)
        models.append(m)
    rows = []
    if args.tasks:
        rows += evaluate_models(models, args.tasks, plan["folder"], limit=args.limit, progress=sys.stderr.isatty())
    if plan["gen"]:
        rows += evaluate_gen(models, plan["gen"], plan["folder"], untaught_file=plan["study"].file_identity)
    return rows


def main(argv=None):
    args = parse_args(argv)
    plan = make_plan(args)
    print(describe_plan(args, plan), flush=True)
    if args.dry_run:
        return 0
    keep_earlier(plan)
    t0, seconds = time.time(), {}
    plan["prepare_seconds"] = prepare_shares(plan) if plan["prepare"] else 0.0
    for a in plan["arms"]:
        if a["cmd"]:
            seconds[a["arm"].name] = train_arm(plan, a)
    rows = score_arms(args, plan)
    written = report.write_comparison(rows, plan["folder"], plan["name"])
    trained = [a for a in plan["arms"] if a["cmd"]]
    curves = plan["folder"] / "loss_curves.png" if trained else None
    if curves:
        plot_curves([layout.log_path_for(a["first"]) for a in trained], curves, [a["arm"].name for a in trained])
    readme = summary(args, argv, plan, seconds, rows, written, curves, time.time() - t0)
    print("\n" + report.markdown_table(rows))
    print(f"\nstudy {plan['study'].name} done in {fmt_time(time.time() - t0)}: {readme}, "
          + ", ".join(str(p) for p in written.values()) + (f", {curves}" if curves else ""))
    return 0


if __name__ == "__main__":
    run_cli(main)
