"""The report of a comparison study (scripts/study.py): out/study/{study}/README.md, with the question, what
ran (base, data, shares, budget), each arm's steps and losses, the scores table and every command.

    from pipelines.study_report import summary
    summary(args, argv, plan, seconds, rows, written, curves, took)
"""
import json
import shlex
import sys
import time
from pathlib import Path

from evaluation import report
from pipelines.study_arms import arm_data, shown
from checkpoint import layout
from core.atomic import write_text
from pipelines.clock import fmt_time
from selection.select import side_paths
from trainer.runlog import run_stats


def log_stats(path):
    """(steps, last train loss, last val loss) of a run log as the summary shows them; "-" for what it lacks."""
    steps, loss, val = run_stats(path)
    return steps, "-" if loss is None else f"{loss:.3f}", "-" if val is None else f"{val:.3f}"


def share_note(plan, a):
    """The data column of an arm: its file's samples (and mean IFD, for a share select_data.py wrote)."""
    if not a["arm"].data:
        return f"{shown(plan['data'])}"
    stats = json.loads(side_paths(arm_data(a["arm"], plan["data"], plan["folder"]))[0].read_text(encoding="utf-8"))
    mean = f", mean ifd {stats['selected_mean']:.3f}" if stats.get("selected_mean") is not None else ""
    return f"data/{a['arm'].data}.jsonl ({stats['selected']:,} samples{mean})"


def summary(args, argv, plan, seconds, rows, written, curves, took):
    """out/study/{study}/README.md: the question, what ran, each arm's steps and losses, the table."""
    study, f = plan["study"], plan["folder"]
    lines = [f"# Study {study.name}", "", study.question + " Every arm starts from the same base with the same "
             "seed and budget, and is scored on the same tests.", "",
             f"- base: {shown(plan['base'])} ({plan['why']})",
             f"- data: {shown(plan['data'])}" + (f"; validation {shown(plan['val'])}" if plan["val"] else "")
             + f"; seed {args.seed}; {args.minutes:g} min of training per arm"
             + (f", at most {args.max_steps} steps" if args.max_steps else "")]
    if plan["prepare"]:
        lines.append(f"- shares: {plan['count']:,} samples each (--ratio {args.ratio:g}), written in "
                     f"{fmt_time(plan['prepare_seconds'])} by the commands below (logs: data/*.log)")
    lines += [f"- took {fmt_time(took)} (training {fmt_time(sum(seconds.values()))}); "
              f"{time.strftime('%Y-%m-%d %H:%M')}", "",
              "| arm | what | data | steps | train loss | val loss | training time |",
              "|---|---|---|---:|---:|---:|---:|"]
    for a in plan["arms"]:
        trained = a["cmd"] is not None
        steps, loss, val = log_stats(layout.log_path_for(a["first"])) if trained else ("-", "-", "-")
        if trained and a.get("then"):                   # its DPO stage: the steps add up, the losses do not
            more, dpo_loss, dpo_val = log_stats(layout.log_path_for(a["output"]))
            steps, loss, val = f"{steps} + {more} DPO", f"{loss} (DPO {dpo_loss})", f"{val} (DPO {dpo_val})"
        lines.append(f"| {a['arm'].name} | {a['arm'].what} | {share_note(plan, a) if trained else '-'} | {steps} | "
                     f"{loss} | {val} | {fmt_time(seconds[a['arm'].name]) if trained else '-'} |")
    lines += (["", f"Note: {study.note}"] if study.note else []) + ["", "## Scores", "", report.markdown_table(rows)]
    files = [f"{Path(p).relative_to(f)}" for p in written.values()] + ([curves.name] if curves else [])
    lines += ["", f"Files here: {', '.join(files)}; eval/bench_*.json and gen_*.json (every item's answer); "
              "{arm}/train.log and {arm}/logs/ (each run's output and log)"
              + ("; data/ (the shares, their stats, histograms and the scores)" if plan["prepare"] else "") + ".",
              "", "## Commands", "", "From the repository root. This study:", "",
              "    python scripts/study.py " + shlex.join(sys.argv[1:] if argv is None else argv), ""]
    if plan["prepare"]:
        lines += ["Its shares:", ""] + [f"    # {share}: {shlex.join(cmd)}" for share, cmd in plan["prepare"]] + [""]
    lines += ["Its arms ran:", ""]
    for a in plan["arms"]:
        lines.append(f"    # {a['arm'].name}: " + ("no training" if a["cmd"] is None else shlex.join(a["cmd"])))
        if a.get("then"):
            lines.append(f"    #   then: {shlex.join(a['then'])}")
    return write_text(f / "README.md", "\n".join(lines) + "\n")
