"""The quickstart's summary (out/quickstart_summary.md): each stage's steps, losses and time, the tests'
scores, how the time went, and what those numbers cannot show, each with what to do: a stage that the
budget stopped before it could learn (fewer steps than pipelines.clock.MIN_STEPS), and tests that asked
smaller samples to fit the budget. Library module for pipelines/quickstart.py.
"""
import json
import math
import re

from checkpoint.layout import log_path_for
from pipelines.clock import MIN_STEPS, fmt_time
from trainer.runlog import read_rows, run_stats

# what the loop's log says when --max_minutes stops a run (trainer/runlog.py, RunLog.time_limit)
STOPPED_RE = re.compile(r"reached at step (\d+) of (\d+)")


def stage_rows(runs, state):
    """The stages' table; runs: [(stage, output path, label)], state: out/quickstart.json's steps."""
    def num(x):
        return "-" if x is None else f"{x:.3f}"
    rows = ["| stage | steps | train loss | val loss | time (budget) |", "|---|---:|---:|---:|---:|"]
    for stage, path, label in runs:
        steps, loss, val = run_stats(log_path_for(path))
        st = state.get(stage, {})
        budget = f" ({fmt_time(st['budget_s'])})" if st.get("budget_s") else ""
        rows.append(f"| {label} | {steps} | {num(loss)} | {num(val)} | "
                    f"{fmt_time(st['seconds']) if st.get('seconds') else '-'}{budget} |")
    return rows


def test_rows(reports, gpu):
    """The tests' table: each report's pass rate (passed/asked). lora_music answers music questions with what
    it retrieves from its knowledge base, as it chats by default; SmolLM2 without."""
    r = {k: json.loads(v.read_text(encoding="utf-8")) for k, v in reports.items()}

    def rate(k):
        return f"{r[k]['rate']:.0%} ({r[k]['passed']}/{r[k]['n']})" if k in r else ""
    if gpu:
        return ["| test (greedy, strict) | lora_music_512 |", "|---|---:|",
                f"| identity, held-out phrasings (en+zh) | {rate('id_lora')} |",
                f"| music, trained questions (sample; the adapter with its retrieval) | {rate('mu_trained')} |",
                f"| music, held-out questions (sample) | {rate('mu_held')} |"]
    return ["| test (greedy, strict) | scratch full_sft | scratch lora_identity | SmolLM2 | SmolLM2 + lora_music |",
            "|---|---:|---:|---:|---:|",
            f"| identity, held-out phrasings (en+zh) | {rate('id_sft')} | {rate('id_slora')} | {rate('id_base')} "
            f"| {rate('id_lora')} |",
            f"| music, trained questions (sample; the adapter with its retrieval) | | | {rate('mu_trained_base')} "
            f"| {rate('mu_trained')} |",
            f"| music, held-out questions (sample) | | | {rate('mu_held_base')} | {rate('mu_held')} |"]


def cut_short(log):
    """(steps done, steps the run had planned) of a run that its time limit stopped, else None."""
    for row in read_rows(log) if log.is_file() else []:
        m = STOPPED_RE.search(str(row.get("stopped", "")))
        if m:
            return int(m[1]), int(m[2])
    return None


def too_few_steps(runs, minutes, full_command):
    """A warning for each stage its time limit stopped before MIN_STEPS, saying what to do: the full run
    of the user's command (full_command) for the LoRA, or a budget that gives the steps (scaled from the
    steps this one gave, in whole 5 minutes, 15 at least)."""
    lines = []
    for stage, path, label in runs:
        cut, need = cut_short(log_path_for(path)), MIN_STEPS.get(stage)
        if cut is None or need is None or cut[0] >= need:
            continue
        more = max(15, 5 * math.ceil(minutes * need / max(cut[0], 1) / 5))
        todo = (f"run the full one, `{full_command}`, or give --minutes {more}" if stage == "lora"
                else f"give --minutes {more}, or run it on a less busy machine")
        lines.append(f"warning: {label} got {cut[0]} step{'s' * (cut[0] != 1)} (of {cut[1]} for a full run; it needs "
                     f"about {need} to learn): too few to learn, its test scores mean little; {todo}")
    return lines


def smaller_tests(plan, test_command):
    """A note when the tests asked a sample of each file to fit the budget (pipelines.quickstart.test_plan)."""
    if not plan or plan["fraction"] >= 1:
        return []
    (i, n_id), (m, n_mu) = plan["identity"], plan["music"]
    left = f"the {fmt_time(plan['left_s'])} the budget left them" if plan["left_s"] else "a budget already spent"
    slow = f" on a machine {plan['slowdown']:.1f}x slower than idle" if plan["slowdown"] > 1.05 else ""
    return [f"note: the tests asked smaller samples to fit {left}{slow}: {i} of the {n_id} identity questions, {m} "
            f"of the {n_mu} music questions of each sample; `{test_command}` asks every identity question"]
