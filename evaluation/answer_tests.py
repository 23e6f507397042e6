"""Answer tests: the held-out identity questions and task question/answer sets, answered in batches
(greedy by default) and scored by the strict verdicts of evaluation/scoring.py, with a JSON report under
out/eval/ that never replaces another model's report.

Library module; the command is eval_model.py:
    python eval_model.py --lora_name lora_music --identity_test --task_test dataset/music_test.jsonl
    from evaluation.answer_tests import expected_identity, read_test_file, run_identity_test
"""
import hashlib
import json
import sys
import time
from pathlib import Path

from chat.engine import ChatEngine
from dataset.formats import iter_jsonl
from evaluation.scoring import ASKS, identity_verdict, task_golds, task_verdict
from core.atomic import move, write_text
from checkpoint.pth import file_sha256
from core.errors import UserError
from inference.generate import generate
from checkpoint.layout import report_path, resolve_input


def read_conversations(path, kind="any"):
    """JSONL records (any accepted format) -> list of dicts with "conversations"."""
    return [rec for _, rec in read_numbered(path, kind)]


def read_numbered(path, kind="any"):
    """[(line number, record with "conversations")] of a JSONL file; a missing file is one line."""
    path = resolve_input(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    return [(n, rec) for n, rec in iter_jsonl(path, kind=kind) if "conversations" in rec]


def first_user(conversations):
    return next(m["content"] for m in conversations if m["role"] == "user")


def last_user(conversations):
    return next(m["content"] for m in reversed(conversations) if m["role"] == "user")


def asked(conversations):
    """The turns a question is: the conversation without its final (reference) assistant turn."""
    return conversations[:-1] if conversations[-1]["role"] == "assistant" else conversations


def reference(record):
    """The reference answer of a record (its final assistant turn), or None."""
    last = record["conversations"][-1]
    return last["content"] if last["role"] == "assistant" else None


def ask_of(record):
    """What an identity question asks (its "ask"); a record without one asks the name."""
    return record.get("ask") or "name"


def read_test_file(path, kind):
    """The records of an identity test (kind "identity") or a task test ("task") file; an empty one, or
    an identity question whose "ask" is not name/creator/other, is one line."""
    numbered = read_numbered(path, kind="any" if kind == "identity" else "chat")
    if not numbered:
        what = "questions" if kind == "identity" else "question/answer conversations"
        raise UserError(f"{path}: no {what} in the file")
    for n, rec in numbered:
        if kind == "identity" and ask_of(rec) not in ASKS:
            raise UserError(f"{path}:{n}: \"ask\" must be one of {', '.join(ASKS)}, not {rec['ask']!r}")
    return [rec for _, rec in numbered]


def expected_identity(loaded, name=None, creator=None, creator_zh=None):
    """(identity, where it came from): the name and creator an identity answer must give. The flags
    (--bot_name, --bot_creator, --bot_creator_zh) win; what they leave out comes from the model's record
    (loaded.identity: the "identity" of its training data). Without a name and creator: one line."""
    recorded, where = loaded.identity_record()
    recorded = recorded or {}
    identity = {"name": name or recorded.get("name"), "creator": creator or recorded.get("creator"),
                "creator_zh": creator_zh or (recorded.get("creator_zh") if not creator else None)}
    if not (identity["name"] and identity["creator"]):
        raise UserError(f"{loaded.label} records no identity (name and creator it was taught) to check; "
                        "pass --bot_name NAME --bot_creator WHO")
    flags = [f for f, v in (("--bot_name", name), ("--bot_creator", creator), ("--bot_creator_zh", creator_zh)) if v]
    source = (", ".join(flags) + ("" if name and creator else f" and {where}")) if flags else where
    return identity, source


def describe_identity(identity, source):
    """'identity checked: Melody by Ada Lab (from the adapter's training data)'."""
    zh = identity.get("creator_zh")
    who = identity["creator"] + (f" / {zh}" if zh and zh != identity["creator"] else "")
    return f"identity checked: {identity['name']} by {who} (from {source})"


def judge(record, answer, identity):
    """(ok, reason) for an answer to any test record, by the scorers of evaluation/scoring.py: an identity
    question (it has "ask" or "identity") by identity_verdict against identity (None: not scored), any
    other record with gold answers by task_verdict; ok None when there is nothing to score against."""
    if "ask" in record or "identity" in record:
        if identity is None:
            return None, "not scored: no identity to check"
        return identity_verdict(answer, ask_of(record), **identity)
    golds = task_golds(record)
    if not golds:
        return None, "no reference answer"
    ok, matched = task_verdict(answer, golds)
    return ok, f"matches {matched!r}" if ok else f"expected {' or '.join(repr(g) for g in golds[:4])}"


def answer_batch(loaded, questions, sampling, system=None, batch_size=16, engine=None, turns=None):
    """Answers (text) to a list of message lists, in batches of batch_size; each prompt is the chat
    engine's (chat/engine.py: a plain one with system, unless engine is given). Prompts of similar length
    are batched together (less padding; each row decodes as it would alone). turns, a list, receives each
    question's chat.engine.Turn (its passages, what was remembered)."""
    engine = engine or ChatEngine(loaded, system=system)
    prepared = [engine.prepare(q[:-1], q[-1]["content"], sampling.get("max_new_tokens", 0)) for q in questions]
    if turns is not None:
        turns.extend(prepared)
    order = sorted(range(len(prepared)), key=lambda i: len(prepared[i].ids))
    answers = [None] * len(prepared)
    for i in range(0, len(order), batch_size):
        chunk = order[i:i + batch_size]
        for j, answer in zip(chunk, answer_prompts(loaded, [prepared[j].ids for j in chunk], sampling)):
            answers[j] = answer
        print(f"  {min(i + batch_size, len(order))}/{len(order)} answered", file=sys.stderr, flush=True)
    return answers


def answer_prompts(loaded, prompts, sampling):
    """The answers (text, stripped) to a batch of prompts (token ids), decoded together."""
    tok = loaded.tokenizer
    outs = generate(loaded.model, prompts, stop_ids=tok.stop_ids, pad_id=tok.pad_id, **sampling)
    return [tok.decode(o).strip() for o in outs]


def run_identity_test(loaded, records, file, sampling, out, identity, source="the flags", system=None,
                      batch_size=16, report=None, engine=None):
    """Ask each held-out identity question; a pass is an affirmative answer with identity's name (its
    creator for a record whose "ask" is "creator") and no denial (evaluation.scoring.identity_verdict).
    Returns the pass rate."""
    print(describe_identity(identity, source))
    questions = [asked(rec["conversations"]) for rec in records]
    answers = answer_batch(loaded, questions, sampling, system, batch_size, engine)
    results, passed = [], 0
    for rec, q, a in zip(records, questions, answers):
        ok, why = identity_verdict(a, ask_of(rec), **identity)
        passed += ok
        print(f"[{'PASS' if ok else 'FAIL'}] {last_user(q)}\n       -> {a[:200]!r}" + ("" if ok else f"  ({why})"))
        results.append({"question": last_user(q), "ask": ask_of(rec), "answer": a, "pass": ok, "reason": why})
    print(f"identity test ({loaded.label}): {passed}/{len(results)} passed = {passed / len(results):.1%}")
    body = report_body("identity", file, loaded, sampling, passed, results)
    save_report(dict(body, identity=identity, identity_source=source), out, "identity", loaded, report)
    return passed / len(results)


def run_task_test(loaded, records, file, sampling, out, system=None, batch_size=16, report=None, engine=None):
    """Ask each question (all turns but the last); correct when one of its gold answers (the record's
    "answers", else the whole reference) occurs in the answer as a phrase, not negated
    (evaluation.scoring.task_verdict). With an engine that retrieves (--docs), also the retrieval hit rate:
    a gold answer in one of the passages put in the prompt (hit@k). Returns the accuracy."""
    questions = [asked(rec["conversations"]) for rec in records]
    turns = []
    answers = answer_batch(loaded, questions, sampling, system, batch_size, engine, turns)
    index = engine.index if engine is not None else None
    results, correct, hits = [], 0, 0
    for rec, q, a, turn in zip(records, questions, answers, turns):
        golds = task_golds(rec)
        ok, matched = task_verdict(a, golds)
        correct += ok
        print(f"[{'OK' if ok else 'XX'}] {last_user(q)[:100]}\n     -> {a[:160]!r}"
              + ("" if ok else f"  (expected {' or '.join(repr(g[:80]) for g in golds[:4])})"))
        results.append({"question": last_user(q), "answer": a, "reference": reference(rec), "golds": golds,
                        "correct": ok, "matched": matched})
        if index is not None:
            hit = passages_hold(turn.passages, golds)
            hits += hit
            results[-1].update(hit=hit, sources=[p.source for p in turn.passages])
    n = len(results)
    found = f"; retrieval hit@{engine.docs_k} {hits}/{n} = {hits / n:.1%}" if index is not None else ""
    print(f"task test ({loaded.label}, {Path(file).name}): {correct}/{n} correct = {correct / n:.1%}{found}")
    body = report_body("task", file, loaded, sampling, correct, results)
    if index is not None:
        body["retrieval"] = {"docs": str(index.folder), "k": engine.docs_k, "hits": hits, "hit_rate": hits / n}
    save_report(body, out, task_test_name(file, index is not None), loaded, report)
    return correct / n


def task_test_name(file, retrieval):
    """The test name a task test's report is saved under (checkpoint.layout.report_path): task_{file's stem},
    with _docs when the answers were given with retrieved passages."""
    return f"task_{Path(file).stem}" + ("_docs" if retrieval else "")


def passages_hold(passages, golds):
    """Whether a gold answer occurs in one of the passages, as task_verdict finds it in an answer."""
    return any(task_verdict(p.text, golds)[0] for p in passages)


def report_body(kind, file, loaded, sampling, good, results):
    return {"kind": kind, "file": str(file), "model": loaded.info, "model_key": model_key(loaded),
            "sampling": sampling, "n": len(results), "passed": good, "rate": good / len(results),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "results": results}


def model_key(loaded):
    """What makes the tested model this one: its checkpoint and adapter files, by path and sha256."""
    info = loaded.info
    key = {"checkpoint": str(Path(info["checkpoint"]).resolve()), "checkpoint_sha256": digest(info["checkpoint"])}
    if info.get("adapter"):
        key.update(adapter=str(Path(info["adapter"]["path"]).resolve()), adapter_sha256=digest(info["adapter"]["path"]))
    return key


_DIGESTS = {}


def digest(path):
    """sha256 of a file (read once per process while it is unchanged); None for a folder (a HF model)."""
    p = Path(path)
    if not p.is_file():
        return None
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_sha256(p)
    return _DIGESTS[key]


def stored_key(path):
    """The model_key of the report at path (a report without one: its checkpoint and adapter paths), or
    None when there is no report."""
    if not Path(path).is_file():
        return None
    try:
        rep = json.loads(Path(path).read_text(encoding="utf-8"))
        info = rep.get("model") or {}
        return rep.get("model_key") or {"checkpoint": info.get("checkpoint"),
                                        "adapter": (info.get("adapter") or {}).get("path")}
    except (ValueError, AttributeError, UnicodeDecodeError):
        return {"unreadable": hashlib.sha256(Path(path).read_bytes()).hexdigest()}


def short_hash(key):
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]


def save_report(body, out, test, loaded, report=None):
    """Write a test's report to report (the user's --report) if given, else to out/eval/{test}_{label}.json,
    which always holds the latest report of that label: an earlier report there of another model (its
    model_key differs) is first kept under the name with that model's short hash, and a line says where."""
    if report:
        return write_report(report, body)
    path = report_path(out, test, loaded.label)
    old = stored_key(path)
    if old is not None and old != body["model_key"]:
        kept = report_path(out, test, loaded.label, short_hash(old))
        move(path, kept)
        print(f"kept the earlier report there, of another model ({old.get('adapter') or old.get('checkpoint')}), "
              f"as {kept}")
    return write_report(path, body)


def write_report(path, data):
    write_text(path, json.dumps(data, ensure_ascii=False, indent=1))
    print(f"report: {path}")
    return Path(path)
