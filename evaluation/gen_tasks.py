"""Generation tasks in the benchmark table: held-out questions answered (greedy, evaluation.answer_tests.answer_batch)
and scored per item, one row per metric in the shape of evaluation.suite.result_rows:
- identity (dataset/identity_test.jsonl): pass, evaluation.scoring.identity_verdict against the identity the
  model records (evaluation.answer_tests.expected_identity); a model that records none is scored against the first
  one in the table that does (a base next to its adapter: 0% when it never says that name), and when no
  model records one the rows are "not scored" (with untaught_file, evaluate_gen holds such models to the
  identity the test file's first line asks for instead: a study of runs none of which was taught one);
- a question/answer file (music = dataset/music_test.jsonl): exact_match (SQuAD EM), contains (a gold
  phrase in the answer, not negated: task_verdict) and f1 (SQuAD token F1), each the max over its golds.
value is the mean over items, stderr the standard error of that mean. Each (model, task) report, every
answer included, goes to out/eval/gen_{task}_{model}.json (evaluation.answer_tests.save_report).

    python scripts/eval_bench.py --model lora_music --tasks arc_easy --gen identity,music --gen_limit 50
    from evaluation.gen_tasks import evaluate_gen, load_gen_tasks
    rows = evaluate_gen(models, load_gen_tasks(["identity", "music"], limit=50), out_dir())
"""
import time
from dataclasses import dataclass
from pathlib import Path

from evaluation.scoring import exact_match, task_golds, task_verdict, token_f1
from core.errors import UserError
from checkpoint.layout import repo_root, resolve_input
from evaluation.harness import summarize
from evaluation.answer_tests import (answer_batch, ask_of, asked, expected_identity, judge, last_user, model_key, read_conversations,
                 read_test_file, save_report)
from evaluation.suite import result_rows

GEN_TASKS = {"identity": "dataset/identity_test.jsonl", "music": "dataset/music_test.jsonl"}
METRICS = {"identity": ("pass",), "task": ("exact_match", "contains", "f1")}
MAX_NEW_TOKENS = 128                  # as eval_model.py's tests: room for a sentence or two


@dataclass
class GenTask:
    name: str                         # the task column of the table: identity, music, or the file's stem
    file: Path
    kind: str                         # "identity" (scored by identity_verdict) or "task" (by its golds)
    records: list                     # the questions scored (the first `limit`)
    limit: object = None              # --gen_limit, or None for every question


def check_gen_names(names):
    """An unknown --gen name is one line (before anything loads); a name given twice counts once."""
    for n in names:
        if n not in GEN_TASKS and Path(n).suffix != ".jsonl":
            raise UserError(f"--gen: unknown task {n!r}; known: {', '.join(GEN_TASKS)} (or a .jsonl question file)")
    return list(dict.fromkeys(names))


def gen_file(name):
    return repo_root() / GEN_TASKS[name] if name in GEN_TASKS else resolve_input(name)


def load_gen_tasks(names, limit=None):
    """A GenTask for each name, its file read now: a missing or bad file is one line before any model loads.
    A file whose first record has "ask" or "identity" is an identity test (as evaluation.answer_tests.judge decides)."""
    tasks = []
    for n in check_gen_names(names):
        path = gen_file(n)
        first = read_conversations(path)[:1]
        kind = "identity" if n == "identity" or any("ask" in r or "identity" in r for r in first) else "task"
        records = read_test_file(path, kind)
        tasks.append(GenTask(n if n in GEN_TASKS else path.stem, path, kind, records[:limit] if limit else records,
                             limit))
    return tasks


def score_item(rec, answer, kind, identity):
    """One answer's scores (None: not scored), with what the report shows of it."""
    q = last_user(asked(rec["conversations"]))
    if kind == "identity":
        ok, why = judge(rec, answer, identity)
        return {"question": q, "ask": ask_of(rec), "answer": answer, "pass": None if ok is None else float(ok),
                "reason": why}
    golds = task_golds(rec)
    if not golds:
        return {"question": q, "answer": answer, "golds": [], "exact_match": None, "contains": None, "f1": None}
    ok, matched = task_verdict(answer, golds)
    return {"question": q, "answer": answer, "golds": golds, "exact_match": exact_match(answer, golds),
            "contains": float(ok), "matched": matched, "f1": token_f1(answer, golds)}


def run_gen_task(loaded, task, sampling, batch_size=16, fallback=None):
    """Answer and score one task on one model -> (result shaped as harness.evaluate_task's, note). An
    identity test on a model that records no identity is scored against fallback ((identity, where from):
    another model's in the same table, e.g. the base against its adapter's), else note is "not scored: ..."
    and nothing is asked."""
    identity, note, items = None, None, []
    if task.kind == "identity":
        try:
            identity, source = expected_identity(loaded)
        except UserError:                   # its message names eval_model.py's flags, which this has not
            if fallback:
                identity, source = fallback
            else:
                note = f"not scored: {loaded.label} records no identity (the name and creator it was taught)"
    t0 = time.perf_counter()
    if note is None:
        answers = answer_batch(loaded, [asked(r["conversations"]) for r in task.records], sampling,
                               batch_size=batch_size)
        items = [score_item(r, a, task.kind, identity) for r, a in zip(task.records, answers)]
    seconds = time.perf_counter() - t0
    result = {"task": task.name, "split": task.file.name, "n": len(task.records), "num_fewshot": 0,
              "limit": task.limit, "chat_template": None,     # the model's own prompt, as eval_model.py asks
              "metrics": summarize(items, METRICS[task.kind]), "items": items, "seconds": seconds,
              "items_per_s": len(items) / seconds if seconds > 0 else 0.0}
    if identity is not None:
        result.update(identity=identity, identity_source=source)
    return result, note


def describe(result, note):
    if note:
        return note
    return ", ".join(f"{k} {v['value']:.1%} ± {v['stderr']:.1%}" if v["value"] is not None else f"{k} not scored"
                     for k, v in result["metrics"].items())


def file_identity(task):
    """(identity, where from) that an identity test file's first line asks for, or None."""
    asks = task.records[0].get("identity") if task.records else None
    if not (isinstance(asks, dict) and asks.get("name") and asks.get("creator")):
        return None
    return {k: asks.get(k) for k in ("name", "creator", "creator_zh")}, f"the identity {task.file.name} asks for"


def evaluate_gen(models, tasks, out, max_new_tokens=MAX_NEW_TOKENS, batch_size=16, say=print, untaught_file=False):
    """Rows of every (model, generation task, metric) for already loaded models (evaluation.suite.load_models);
    a row that could not be scored has value None and a "note". untaught_file: when no model records an
    identity, hold them all to the one the identity test's lines ask for (evaluation.gen_tasks.file_identity)."""
    sampling = {"temperature": 0.0, "max_new_tokens": max_new_tokens}          # greedy
    taught = next((m for m in models if m.identity), None)
    fallback = (taught.identity, f"the identity {taught.label} records") if taught else None
    rows = []
    for m in models:
        for task in tasks:
            held = fallback or (file_identity(task) if untaught_file and task.kind == "identity" else None)
            result, note = run_gen_task(m, task, sampling, batch_size, held)
            body = {"kind": "gen", "file": str(task.file), "label": m.label, "model": m.info, "model_key": model_key(m),
                    "sampling": sampling, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "note": note, **result}
            save_report(body, out, f"gen_{task.name}", m)
            say(f"{m.label} {task.name} ({result['n']} questions, greedy): {describe(result, note)}")
            rows += [dict(r, note=note) if note else r for r in result_rows(result, m.label, m.info)]
    return rows
