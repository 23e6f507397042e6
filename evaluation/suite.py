"""Several models on several benchmark tasks: THE loop the evaluation command and the comparison studies
call. Each (model, task) result is saved as out/eval/bench_{task}_{k}shot_{model}.json (per-item
predictions included; an earlier report there of another model is kept under a hashed name, as for every
test report), and comes back as a flat row for the side-by-side table (evaluation/report.py).

    from evaluation.suite import evaluate_models, load_models
    models = load_models(["smollm2", "lora_music"], out_dir(), with_base=True)
    rows = evaluate_models(models, ["arc_easy"], out_dir(), limit=100)
"""
import time
from pathlib import Path

from inference.load import load_for_inference, load_model_spec
from checkpoint.layout import bench_test_name
from evaluation.benchmarks import Task, load_task
from evaluation.harness import DEFAULT_SEED, evaluate_task
from evaluation.answer_tests import model_key, save_report


def result_rows(result, label, info, **extra):
    """One row per metric of a result (evaluate_task's, or a saved report's): model (its label), checkpoint,
    adapter, task, split, n, num_fewshot, limit, chat_template, metric, value, stderr, and extra."""
    common = {"model": label, "checkpoint": info["checkpoint"], "adapter": (info.get("adapter") or {}).get("path"),
              "task": result["task"], "split": result.get("split"), "n": result.get("n"),
              "num_fewshot": result.get("num_fewshot"), "limit": result.get("limit"),
              "chat_template": result.get("chat_template"), **extra}
    return [dict(common, metric=m, value=v["value"], stderr=v.get("stderr")) for m, v in result["metrics"].items()]


def with_bases(models, device, dtype, say):
    """The models, each adapter preceded by its base (unless that base is in the list already)."""
    def key(path):
        return str(Path(path).resolve())
    have = {key(m.info["checkpoint"]) for m in models if not m.info.get("adapter")}
    out = []
    for m in models:
        base = m.info["checkpoint"] if m.info.get("adapter") else None
        if base and key(base) not in have:
            have.add(key(base))
            say(f"base of {m.label}: {base}")
            out.append(load_for_inference(ckpt=Path(base), device=device, dtype=dtype))
        out.append(m)
    return out


def load_models(specs, out, device="cpu", dtype=None, with_base=False, say=print, hidden_size=None):
    """Every --model loaded (a bad one is one line before any scoring starts); hidden_size picks among
    out/{stage}_{hidden}.pth for a stage name."""
    loaded = []
    for spec in specs:
        m = load_model_spec(spec, out, device=device, dtype=dtype, hidden_size=hidden_size)
        say(f"model {spec}: {m.describe()}")
        loaded.append(m)
    return with_bases(loaded, device, dtype, say) if with_base else loaded


def evaluate_models(models, task_names, out, num_fewshot=0, limit=None, seed=DEFAULT_SEED, chat=False,
                    batch_tokens=4096, progress=True, say=print):
    """Rows of every (model, task, metric) for loaded models (load_models); a task is a name or a loaded
    benchmarks.Task."""
    tasks = [n if isinstance(n, Task) else load_task(n) for n in task_names]   # missing items: one line, first
    rows, first = [], {}            # (weights, task) -> (label, items) of the first precision scored
    for m in models:
        weights = (m.info["checkpoint"], (m.info.get("adapter") or {}).get("path"))
        for task in tasks:
            result = evaluate_task(m, task, num_fewshot, limit, seed, chat, batch_tokens, progress)
            ref = first.setdefault((weights, task.name), (m.label, result["items"]))
            if ref[0] != m.label:   # the same weights at another precision: how often it predicts the same
                result["agreement"] = same_predictions(result["items"], ref[1], ref[0])
            body = {"kind": "benchmark", "label": m.label, "model": m.info, "model_key": model_key(m),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **result}
            save_report(body, out, bench_test_name(task.name, num_fewshot, limit, chat), m)
            metrics = ", ".join(f"{k} {v['value']:.1%} ± {v['stderr']:.1%}" for k, v in result["metrics"].items())
            agree = result.get("agreement")
            agree = "; same prediction as " + agree["with"] + ": " + ", ".join(
                f"{k} {v:.1%}" for k, v in agree.items() if k != "with") if agree else ""
            say(f"{m.label} {task.name} ({result['n']} items, {num_fewshot}-shot): {metrics} "
                f"[{result['items_per_s']:.1f} items/s]{agree}")
            rows += result_rows(result, m.label, m.info)
    return rows


def same_predictions(items, ref_items, ref_label):
    """{"with": ref_label, "acc": share of items with the same prediction[, "acc_norm": ... by acc_norm]}."""
    out = {"with": ref_label}
    for key, metric in (("pred", "acc"), ("pred_norm", "acc_norm")):
        pairs = [(a[key], b[key]) for a, b in zip(items, ref_items) if key in a and key in b and a["id"] == b["id"]]
        if pairs:
            out[metric] = sum(x == y for x, y in pairs) / len(pairs)
    return out
