"""Answer tests: the held-out identity questions and task question/answer sets, answered in batches
(greedy by default) and scored by dataset/scoring.py, with a JSON report under out/eval/.

Library module; the command is eval_model.py:
    python eval_model.py --lora_name lora_music --identity_test --task_test dataset/music_test.jsonl
    from evaluation.qa import read_test_file, run_identity_test
"""
import json
import sys
import time
from pathlib import Path

from dataset.formats import iter_jsonl
from dataset.scoring import identity_verdict, task_verdict
from model.atomic import write_text
from model.errors import UserError
from model.generate import build_prompt, generate
from model.paths import report_path, resolve_input


def read_conversations(path, kind="any"):
    """JSONL records (any accepted format) -> list of dicts with "conversations"."""
    path = resolve_input(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    return [rec for _, rec in iter_jsonl(path, kind=kind) if "conversations" in rec]


def first_user(conversations):
    return next(m["content"] for m in conversations if m["role"] == "user")


def read_test_file(path, kind):
    """The records of an identity test (kind "identity") or a task test ("task") file; an empty one is
    one line."""
    records = read_conversations(path, kind="any" if kind == "identity" else "chat")
    if not records:
        what = "questions" if kind == "identity" else "question/answer conversations"
        raise UserError(f"{path}: no {what} in the file")
    return records


def answer_batch(loaded, questions, sampling, system=None, batch_size=16):
    """Answers (text) to a list of message lists, in batches of batch_size."""
    tok, answers = loaded.tokenizer, []
    window = loaded.model.config.max_position_embeddings
    for i in range(0, len(questions), batch_size):
        chunk = [build_prompt(tok, q, system, loaded.continuation, window, sampling.get("max_new_tokens", 0))
                 for q in questions[i:i + batch_size]]
        outs = generate(loaded.model, chunk, stop_ids=tok.stop_ids, pad_id=tok.pad_id, **sampling)
        answers.extend(tok.decode(o).strip() for o in outs)
        print(f"  {min(i + batch_size, len(questions))}/{len(questions)} answered", file=sys.stderr, flush=True)
    return answers


def run_identity_test(loaded, records, file, sampling, out, system=None, batch_size=16, report=None):
    """Ask each held-out identity question; a pass names the expected name (record "expect": {"name"})
    and is not a denial (dataset.scoring.identity_verdict). Returns the pass rate."""
    questions, names = [], []
    for rec in records:
        questions.append([m for m in rec["conversations"] if m["role"] != "assistant"][:2])
        names.append((rec.get("expect") or {}).get("name", "TinyMind"))
    answers = answer_batch(loaded, questions, sampling, system, batch_size)
    results, passed = [], 0
    for q, name, a in zip(questions, names, answers):
        ok, why = identity_verdict(a, name)
        passed += ok
        print(f"[{'PASS' if ok else 'FAIL'}] {first_user(q)}\n       -> {a[:200]!r}" + ("" if ok else f"  ({why})"))
        results.append({"question": first_user(q), "answer": a, "expect": name, "pass": ok, "reason": why})
    print(f"identity test ({loaded.label}): {passed}/{len(results)} passed = {passed / len(results):.1%}")
    write_report(report or report_path(out, "identity", loaded.label),
                 report_body("identity", file, loaded, sampling, passed, results))
    return passed / len(results)


def run_task_test(loaded, records, file, sampling, out, system=None, batch_size=16, report=None):
    """Ask each question (all turns but the last); correct when the answer holds the reference or one
    of the record's "answers" aliases (dataset.scoring.task_verdict). Returns the accuracy."""
    questions, refs = [], []
    for rec in records:
        conv = rec["conversations"]
        questions.append(conv[:-1])
        aliases = rec.get("answers") or []
        refs.append([conv[-1]["content"]] + [str(a) for a in (aliases if isinstance(aliases, list) else [aliases])])
    answers = answer_batch(loaded, questions, sampling, system, batch_size)
    results, correct = [], 0
    for q, ref, a in zip(questions, refs, answers):
        ok, matched = task_verdict(a, ref)
        correct += ok
        print(f"[{'OK' if ok else 'XX'}] {q[-1]['content'][:100]}\n     -> {a[:160]!r}"
              + ("" if ok else f"  (expected {ref[0][:80]!r}{' or an alias' if len(ref) > 1 else ''})"))
        results.append({"question": q[-1]["content"], "answer": a, "reference": ref[0], "aliases": ref[1:],
                        "correct": ok, "matched": matched})
    print(f"task test ({loaded.label}, {Path(file).name}): {correct}/{len(results)} correct = "
          f"{correct / len(results):.1%}")
    write_report(report or report_path(out, f"task_{Path(file).stem}", loaded.label),
                 report_body("task", file, loaded, sampling, correct, results))
    return correct / len(results)


def report_body(kind, file, loaded, sampling, good, results):
    return {"kind": kind, "file": str(file), "model": loaded.info, "sampling": sampling, "n": len(results),
            "passed": good, "rate": good / len(results), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "results": results}


def write_report(path, data):
    write_text(path, json.dumps(data, ensure_ascii=False, indent=1))
    print(f"report: {path}")
    return Path(path)
