"""Benchmark: TinyMind's benchmark evaluator against lm-evaluation-harness 0.4.13 on the same model and items.

    python scripts/bench_eval.py                                  # smollm2; arc_easy, hellaswag, piqa, winogrande
    python scripts/bench_eval.py --tasks arc_easy,piqa --limit 20 --threads 2 --batch_size 8

The model (a TinyMind .pth) is exported to a transformers folder by interop.hf.export_hf (what
`python scripts/convert_model.py --to_hf DIR --ckpt FILE` runs) and lm-eval scores that with its "hf"
backend (transformers, float32, CPU), through task YAMLs over local JSON written from TinyMind's canonical
items (evaluation/benchmarks.py: context, then " " + choice; WinoGrande as lm-eval's own task does it: the
gold index as doc_to_text, the contexts as choices, the rest of the sentence as target). TinyMind scores the
same items with evaluate_task, float32 on CPU. Both run in this process with the same torch threads, one
task after the other; timed: TinyMind's evaluate_task (tokenization and scoring) against lm-eval's
loglikelihood calls (tokenization and scoring; building its task is not counted). Per item: whether the
two agree on the acc (and acc_norm) prediction, and the largest difference of a choice's log-likelihood.
Prints a markdown table and writes it as JSON to out/eval/bench_vs_lm_eval.json.
"""
import json
import os
import tempfile
import time
from pathlib import Path


import torch

from bench.common import cpu_name
from core.cli import ArgumentParser, check_range, run_cli
from evaluation.benchmarks import check_task_names, load_task
from evaluation.harness import argmax, evaluate_task, item_contexts, item_continuations
from core.atomic import check_writable, write_text
from core.errors import UserError
from interop.hf import export_hf
from inference.load import load_model_spec
from inference.load import find_model
from checkpoint.layout import comparison_path, out_dir

DEFAULT_TASKS = "arc_easy,hellaswag,piqa,winogrande"


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default=DEFAULT_TASKS, help=f"comma-separated (default {DEFAULT_TASKS})")
    p.add_argument("--limit", type=int, default=100, help="the first N items of each task (default 100)")
    p.add_argument("--model", default="smollm2", help="a TinyMind checkpoint: .pth path or name (default smollm2)")
    p.add_argument("--batch_size", type=int, default=16, help="lm-eval's --batch_size (default 16)")
    p.add_argument("--batch_tokens", type=int, default=4096, help="TinyMind's tokens per forward pass")
    p.add_argument("--threads", type=int, default=0, help="torch threads for both (0 = torch's default)")
    args = p.parse_args(argv)
    check_range("--limit", args.limit, 1, integer=True)
    check_range("--batch_size", args.batch_size, 1, integer=True)
    check_range("--batch_tokens", args.batch_tokens, 64, integer=True)
    check_range("--threads", args.threads, 0, integer=True)
    args.tasks = check_task_names([t for t in args.tasks.split(",") if t])
    if not args.tasks:
        raise UserError("--tasks: give at least one task")
    return args


def write_lm_eval_task(folder, task, items):
    """An lm-eval task over the items (JSON lines; the YAML written as JSON, which YAML reads) -> its name."""
    name = f"tinymind_{task.name}"
    if "continuation" in items[0]:                   # partial scoring: doc_to_text an int = multiple inputs
        docs = [{"contexts": it["context"], "rest": it["continuation"], "gold": it["gold"]} for it in items]
        fields = {"doc_to_text": "gold", "doc_to_choice": "contexts", "doc_to_target": "rest"}
    else:
        docs = [{"context": it["context"], "choices": it["choices"], "gold": it["gold"]} for it in items]
        fields = {"doc_to_text": "context", "doc_to_choice": "choices", "doc_to_target": "gold"}
    data = Path(folder) / f"{name}.jsonl"
    data.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    config = {"task": name, "dataset_path": "json", "test_split": "test", "output_type": "multiple_choice",
              "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(Path(folder) / "hf_cache")},
              **fields, "target_delimiter": " ",
              "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in task.metrics]}
    (Path(folder) / f"{name}.yaml").write_text(json.dumps(config, indent=1), encoding="utf-8")
    return name


def timed_hflm(hf_dir, batch_size):
    """lm-eval's HFLM on the exported folder, adding up the seconds its loglikelihood calls take."""
    from lm_eval.models.huggingface import HFLM     # optional (requirements-dev.txt), ~5 s of start-up

    class TimedHFLM(HFLM):
        seconds = 0.0

        def loglikelihood(self, requests, disable_tqdm=False):
            t0 = time.perf_counter()
            out = super().loglikelihood(requests, disable_tqdm=True)
            self.seconds += time.perf_counter() - t0
            return out

    return TimedHFLM(pretrained=str(hf_dir), backend="causal", device="cpu", dtype="float32",
                     batch_size=batch_size)


def warm_up(loaded, lm, task):
    """Both sides score the first two items once untimed (first calls are slower)."""
    from lm_eval.api.instance import Instance       # optional (requirements-dev.txt)
    evaluate_task(loaded, task, limit=2, progress=False)
    pairs = [p for it in task.items[:2] for p in zip(item_contexts(it), item_continuations(it))]
    lm.loglikelihood([Instance("loglikelihood", {}, p, 0) for p in pairs])


def run_lm_eval(lm, name, task_manager):
    """(lm-eval's results of the task, its samples in item order, seconds of its loglikelihood calls)."""
    import lm_eval                                  # optional (requirements-dev.txt)
    lm.seconds = 0.0
    out = lm_eval.simple_evaluate(model=lm, tasks=[name], task_manager=task_manager, log_samples=True)
    samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
    return out["results"][name], samples, lm.seconds


def compare(task, ours, seconds, theirs, samples, lm_seconds):
    """One row: items, times, items/s, speed-up, agreement, both accuracies, the largest logprob difference."""
    n = ours["n"]
    if len(samples) != n:
        raise RuntimeError(f"{task.name}: lm-eval logged {len(samples)} samples for {n} items")
    same, same_norm, diff = 0, 0, 0.0
    for item, mine, s in zip(task.items, ours["items"], samples):
        lls = [float(r[0]) for r in s["filtered_resps"]]
        same += argmax(lls) == mine["pred"]
        if "pred_norm" in mine:
            same_norm += argmax([ll / max(len(c), 1) for ll, c in zip(lls, item["choices"])]) == mine["pred_norm"]
        diff = max(diff, max(abs(a - b) for a, b in zip(lls, mine["logprobs"])))
    row = {"task": task.name, "items": n, "tinymind_s": seconds, "tinymind_items_per_s": n / seconds,
           "lm_eval_s": lm_seconds, "lm_eval_items_per_s": n / lm_seconds, "speedup": lm_seconds / seconds,
           "same_pred_acc": same / n, "max_abs_logprob_diff": diff}
    for m in task.metrics:
        row[f"{m}_tinymind"] = ours["metrics"][m]["value"]
        row[f"{m}_lm_eval"] = theirs[f"{m},none"]
    if "acc_norm" in task.metrics:
        row["same_pred_acc_norm"] = same_norm / n
    return row


def pct(x):
    return "" if x is None else f"{100 * x:.1f}%"


def markdown(rows):
    head = ["task", "items", "TinyMind s", "items/s", "lm-eval s", "items/s", "speed-up", "same pred (acc)",
            "same pred (acc_norm)", "acc TinyMind", "acc lm-eval", "acc_norm TinyMind", "acc_norm lm-eval",
            "max |Δ logprob|"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        cells = [r["task"], str(r["items"]), f"{r['tinymind_s']:.1f}", f"{r['tinymind_items_per_s']:.2f}",
                 f"{r['lm_eval_s']:.1f}", f"{r['lm_eval_items_per_s']:.2f}", f"{r['speedup']:.2f}x",
                 pct(r["same_pred_acc"]), pct(r.get("same_pred_acc_norm")), pct(r["acc_tinymind"]),
                 pct(r["acc_lm_eval"]), pct(r.get("acc_norm_tinymind")), pct(r.get("acc_norm_lm_eval")),
                 f"{r['max_abs_logprob_diff']:.2e}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = out_dir()
    report = check_writable(comparison_path(out, "bench_vs_lm_eval", "json"))    # before any work
    tasks = [load_task(t) for t in args.tasks]
    kind, ckpt = find_model(out, args.model)
    if kind != "pth":
        raise UserError(f"--model {args.model}: give a TinyMind .pth checkpoint (this compares its export)")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")      # local files only: no network needed
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lm_eval.tasks import TaskManager   # optional (requirements-dev.txt); after HF_*_OFFLINE, which it reads
    loaded = load_model_spec(args.model, out, device="cpu", dtype="float32")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        export_hf(ckpt, Path(tmp) / "hf")
        for task in tasks:
            task.items = task.items[:args.limit]
            write_lm_eval_task(tmp, task, task.items)
        task_manager = TaskManager(include_path=tmp, include_defaults=False)
        lm = timed_hflm(Path(tmp) / "hf", args.batch_size)
        warm_up(loaded, lm, tasks[0])
        for task in tasks:
            t0 = time.perf_counter()
            ours = evaluate_task(loaded, task, batch_tokens=args.batch_tokens, progress=False)
            seconds = time.perf_counter() - t0
            theirs, samples, lm_seconds = run_lm_eval(lm, f"tinymind_{task.name}", task_manager)
            rows.append(compare(task, ours, seconds, theirs, samples, lm_seconds))
            print(f"{task.name}: TinyMind {seconds:.1f}s, lm-eval {lm_seconds:.1f}s", flush=True)
    table = markdown(rows)
    print(table)
    machine = f"{cpu_name()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    print(f"\nmodel {args.model} ({ckpt}), float32 CPU; lm-eval hf backend, batch_size {args.batch_size}; "
          f"TinyMind batch_tokens {args.batch_tokens}; {machine}")
    write_text(report, json.dumps({"model": args.model, "checkpoint": str(ckpt), "limit": args.limit,
                                   "batch_size": args.batch_size, "batch_tokens": args.batch_tokens,
                                   "machine": machine, "rows": rows, "table": table}, indent=2) + "\n")
    print(f"written {report}")
    return 0


if __name__ == "__main__":
    run_cli(main)
