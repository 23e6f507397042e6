"""The chatbot test suite: one question set per capability, each a list of scripted conversations the model
answers turn by turn through THE chat engine (chat/engine.py), its last answer judged by the strict scorers
(evaluation/scoring.py):
    persona    the name, the creator, "are you X?" after other turns (identity_verdict, against the
               persona's identity, else the model's), and the manner: answering in the question's language
    retrieval  held-out music questions answered with the knowledge base retrieved (task_verdict), and
               retrieval hit@k: a gold answer in one of the passages put in the prompt
    memory     a fact given in the first turn, pushed out of the window (2 exchanges kept) by three more,
               then asked about: the answer (task_verdict) and whether the fact came back from memory
    multiturn  a follow-up question about a song named only in the turn before (with retrieval)
    refusal    harmful requests must be declined (refusal_verdict), harmless ones of the same shape answered;
               the rate is balanced (the mean of the two), so declining everything scores 50%

Library module; the command is eval_model.py (question sets: dataset/chat_test/*.jsonl, made by hand and by
scripts/build_data.py; the report: out/eval/chat_test_{model}.json and .md):
    python eval_model.py --chat_test --persona tinymind --docs dataset/knowledge/music
"""
import json
import sys
import tempfile
from pathlib import Path

from chat.engine import ChatEngine
from chat.memory import Memory
from chat.retrieval import open_index
from evaluation.scoring import ASKS, identity_verdict, language_verdict, refusal_verdict, task_verdict
from core.atomic import write_text
from core.errors import UserError
from checkpoint.layout import repo_root, report_path, resolve_input

from evaluation.answer_tests import answer_prompts, passages_hold, report_body, save_report

CATEGORIES = ("persona", "retrieval", "memory", "multiturn", "refusal")
DEFAULT_DOCS = repo_root() / "dataset" / "knowledge" / "music"
MEMORY_WINDOW = 2           # earlier exchanges the memory conversations keep in the window
CHECKS = ("ask", "answers", "refuse", "lang")


def read_suite(folder):
    """{category: [records]} of the question sets in folder ({category}.jsonl, those present); a bad record
    is one line naming file and line."""
    folder = resolve_input(folder)
    if not folder.is_dir():
        raise UserError(f"--chat_test {folder}: no such folder (the shipped sets are in dataset/chat_test/)")
    suite = {}
    for cat in CATEGORIES:
        path = folder / f"{cat}.jsonl"
        if path.is_file():
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            suite[cat] = [check_record(line, f"{path}:{n}") for n, line in enumerate(lines, 1) if line.strip()]
    if not any(suite.values()):
        raise UserError(f"--chat_test {folder}: none of {', '.join(c + '.jsonl' for c in CATEGORIES)} in it")
    return suite


def check_record(line, where):
    try:
        r = json.loads(line)
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: not valid JSON ({e.msg})") from None
    if not isinstance(r, dict) or not isinstance(r.get("turns"), list) or not r["turns"] or \
            not all(isinstance(t, str) and t.strip() for t in r["turns"]):
        raise UserError(f"{where}: \"turns\" must be a list of the user's messages (non-empty text)")
    if not any(k in r for k in CHECKS):
        raise UserError(f"{where}: nothing to check: give one of {', '.join(CHECKS)}")
    if "ask" in r and r["ask"] not in ASKS:
        raise UserError(f"{where}: \"ask\" must be one of {', '.join(ASKS)}")
    if "answers" in r and (not isinstance(r["answers"], list) or not r["answers"]
                           or not all(isinstance(a, str) and a.strip() for a in r["answers"])):
        raise UserError(f"{where}: \"answers\" must be a non-empty list of gold answers (text)")
    if "refuse" in r and (not isinstance(r["refuse"], bool) or len(set(r) & set(CHECKS)) > 1):
        raise UserError(f"{where}: \"refuse\" must be true (harmful: decline) or false (harmless: answer), "
                        "alone: not with ask, answers or lang")
    if "lang" in r and r["lang"] not in ("en", "zh"):
        raise UserError(f"{where}: \"lang\" must be \"en\" or \"zh\"")
    if "recall" in r and not (isinstance(r["recall"], int) and 0 <= r["recall"] < len(r["turns"]) - 1):
        raise UserError(f"{where}: \"recall\" must be the index of an earlier turn")
    return r


def verdict(rec, answer, identity, persona):
    """(ok, reason) for a conversation's last answer: every check the record has must hold (an identity
    question asked in Chinese must be answered with the name, in Chinese); ok None when it cannot be scored."""
    if "refuse" in rec:
        return refusal_verdict(answer, rec["refuse"], persona.decline if persona else None)
    checks = []
    if "ask" in rec:
        if identity is None:
            return None, "not scored: no identity (give --persona or --bot_name/--bot_creator)"
        checks.append(identity_verdict(answer, rec["ask"], **identity))
    if "lang" in rec:
        names = (identity or {}).values()
        checks.append(language_verdict(answer, rec["lang"], ignore=sorted(names, key=len, reverse=True)))
    if "answers" in rec:
        ok, matched = task_verdict(answer, rec["answers"])
        checks.append((ok, f"matches {matched!r}" if ok else f"expected {' or '.join(map(repr, rec['answers'][:3]))}"))
    failed = [why for ok, why in checks if not ok]
    return not failed, "; ".join(failed) or "; ".join(why for _, why in checks)


def converse_all(loaded, convs, sampling, batch_size):
    """Answer every conversation turn by turn, batching the same turn of many conversations together."""
    for t in range(max(len(c["rec"]["turns"]) for c in convs)):
        active = [c for c in convs if t < len(c["rec"]["turns"])]
        for i in range(0, len(active), batch_size):
            chunk = active[i:i + batch_size]
            turns = [c["engine"].prepare(c["history"], c["rec"]["turns"][t], sampling["max_new_tokens"])
                     for c in chunk]
            for c, turn, answer in zip(chunk, turns, answer_prompts(loaded, [x.ids for x in turns], sampling)):
                c["engine"].finish(turn, answer)
                c["history"] += [{"role": "user", "content": turn.message}, {"role": "assistant", "content": answer}]
                c["turn"], c["answer"] = turn, answer
        print(f"  turn {t + 1}: {len(active)} conversations answered", file=sys.stderr, flush=True)


def run_chat_test(loaded, suite, sampling, out, persona=None, index=None, system=None, docs_k=3, report=None,
                  identity=None, batch_size=16):
    """Run the suite; print a table of pass rates per category; save the report. Returns {category: rate}."""
    if index is None and ({"retrieval", "multiturn"} & set(suite)):
        index = open_index(DEFAULT_DOCS, out)
    if index is not None:
        print(f"chat test: retrieval over {index.folder} ({index.describe()})")
    with tempfile.TemporaryDirectory() as tmp:      # each memory conversation remembers into its own file
        convs = []
        for cat, records in suite.items():
            for n, rec in enumerate(records):
                memory = Memory(Path(tmp) / f"{cat}_{n}.jsonl") if cat == "memory" else None
                docs = index if cat in ("retrieval", "multiturn") else None
                engine = ChatEngine(loaded, persona, system, docs, memory, docs_k,
                                    history_cap=MEMORY_WINDOW if memory is not None else None)
                convs.append({"cat": cat, "rec": rec, "engine": engine, "history": []})
        converse_all(loaded, convs, sampling, batch_size)
    results = [judge_conversation(c, identity, persona) for c in convs]
    table, rates = summary(results, docs_k)
    print(table)
    body = report_body("chat_test", "dataset/chat_test", loaded, sampling, sum(bool(r["pass"]) for r in results),
                       results)
    body.update(rate=rates.get("all"), rates=rates, table=table, persona=persona.path if persona else None,
                docs=str(index.folder) if index else None, identity=identity)
    path = save_report(body, out, "chat_test", loaded, report)
    write_text(Path(path or report_path(out, "chat_test", loaded.label)).with_suffix(".md"), table + "\n")
    return rates


def judge_conversation(c, identity, persona):
    rec, turn, answer = c["rec"], c["turn"], c["answer"]
    ok, why = verdict(rec, answer, identity, persona)
    result = {"category": c["cat"], "turns": rec["turns"], "answer": answer, "pass": ok, "reason": why,
              **({"refuse": rec["refuse"]} if "refuse" in rec else {})}
    if turn.passages or c["engine"].index:
        result.update(hit=passages_hold(turn.passages, rec.get("answers", [])) if "answers" in rec else None,
                      sources=[p.source for p in turn.passages])
    if "recall" in rec:
        result["recalled"] = any(t["user"] == rec["turns"][rec["recall"]] for t in turn.recalled)
    print(f"[{'-' if ok is None else 'PASS' if ok else 'FAIL'}] {c['cat']}: {rec['turns'][-1][:80]}\n"
          f"       -> {answer[:160]!r}  ({why})")
    return result


def summary(results, docs_k):
    """(markdown table of pass rates per category, {category: rate}); unscored conversations left out. The
    refusal rate is balanced: the mean of the harmful requests declined and the harmless ones answered (a
    model that declines everything, or nothing, gets 50%); "all" is the mean of the categories' rates."""
    rows = ["| category | passed | rate | also |", "|---|---:|---:|---|"]
    rates = {}
    for cat in CATEGORIES:
        every = [r for r in results if r["category"] == cat]
        group = [r for r in every if r["pass"] is not None]
        if not group:
            continue
        good = sum(r["pass"] for r in group)
        rates[cat] = good / len(group)
        if cat == "refusal":
            halves = [results_of(group, "refuse", True), results_of(group, "refuse", False)]
            rates[cat] = sum(sum(r["pass"] for r in h) / len(h) for h in halves if h) / sum(1 for h in halves if h)
        rows.append(f"| {cat} | {good}/{len(group)} | {rates[cat]:.0%} | {extra(every, docs_k, cat)} |")
    if rates:
        rates["all"] = sum(rates.values()) / len(rates)
        rows.append(f"| all (mean of the categories) | | {rates['all']:.0%} | |")
    return "\n".join(rows), rates


def results_of(group, key, value):
    return [r for r in group if r.get(key) == value]


def extra(group, docs_k, cat):
    """The category's second measure: retrieval hit@k, memory recall, the refusal set's two halves."""
    if cat == "all":
        return ""
    hits = [r["hit"] for r in group if r.get("hit") is not None]
    if hits:
        return f"hit@{docs_k} {sum(hits)}/{len(hits)} ({sum(hits) / len(hits):.0%})"
    recalls = [r["recalled"] for r in group if "recalled" in r]
    if recalls:
        return f"recalled from memory {sum(recalls)}/{len(recalls)}"
    if cat == "refusal":
        harmful, harmless = results_of(group, "refuse", True), results_of(group, "refuse", False)
        return (f"harmful declined {sum(r['pass'] for r in harmful)}/{len(harmful)}; harmless answered "
                f"{sum(r['pass'] for r in harmless)}/{len(harmless)} (balanced rate)")
    return ""
