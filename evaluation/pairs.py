"""Preference pairs made by the project's own verifiers: a model answers each question N times (sampled,
through the one batched decoder), the strict scorers of evaluation/scoring.py judge every answer, and each
question with a failing answer gives one pair: chosen = a passing answer (the record's reference answer
when none passes), rejected = a failing one. Questions whose N answers all pass are left out, and counted.

Which questions: records with gold "answers" (task questions) and identity questions (records with "ask" or
"identity"); the rest (persona, replay, chat) have nothing to check an answer against, and are counted.
A question that holds a test set's question (dataset/*_test.jsonl by default) is left out: no test is
trained on.

Library module; the command is scripts/make_pairs.py:
    from evaluation.pairs import make_pairs
    pairs, counts = make_pairs(loaded, records, n=4, sampling={...}, seed=0)
"""
import json
import sys
from collections import Counter

from chat.engine import ChatEngine
from evaluation.answer_tests import asked, judge, last_user, reference
from evaluation.scoring import normalize
from inference.generate import generate


def checkable(record):
    """Whether a record's answers can be judged: its own gold "answers" (not a reference answer that would
    have to occur whole), or an identity question."""
    return bool(record.get("answers")) or "ask" in record or isinstance(record.get("identity"), dict)


def questions_asked_by(records):
    """The normalised questions of test records (the last user turn of each)."""
    return {q for q in (normalize(last_user(r["conversations"])) for r in records) if len(q) >= 8}


def held_out(record, tests):
    """Whether a training record asks a test question: a test question's normalised text inside its own
    (a RAFT prompt holds passages around the question)."""
    text = normalize(last_user(record["conversations"]))
    return any(q in text for q in tests)


class Answer(str):
    """A sampled answer's text; .finished: it ended by itself, not at the max_new_tokens cut."""

    def __new__(cls, text, finished=True):
        obj = super().__new__(cls, text)
        obj.finished = finished
        return obj


def answer_seed(seed, n, i, k):
    """The seed of answer k (of n) to question i: another --seed gives other answers to every question (not
    the same ones shifted by a question)."""
    return (seed * 1_000_003 + n * i + k) % 2**63


def sample_answers(loaded, questions, n, sampling, seed, batch_size=16):
    """n sampled answers (Answer: text and whether it finished) to each question (a message list):
    [[answer, ...], ...]. Each answer has its own seed (answer_seed), so the answers are the same however
    the rows are batched."""
    engine, tok = ChatEngine(loaded), loaded.tokenizer
    max_new = sampling.get("max_new_tokens", 256)
    prepared = [engine.prepare(q[:-1], q[-1]["content"], max_new).ids for q in questions]
    jobs = sorted(((i, k) for i in range(len(questions)) for k in range(n)), key=lambda j: len(prepared[j[0]]))
    answers = [[None] * n for _ in questions]
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        outs = generate(loaded.model, [prepared[i] for i, _ in chunk], stop_ids=tok.stop_ids, pad_id=tok.pad_id,
                        seed=[answer_seed(seed, n, i, k) for i, k in chunk], **sampling)
        for (i, k), out in zip(chunk, outs):
            answers[i][k] = Answer(tok.decode(out).strip(), len(out) < max_new)
        print(f"  {min(start + batch_size, len(jobs))}/{len(jobs)} answers sampled", file=sys.stderr, flush=True)
    return answers


def make_pairs(loaded, records, n, sampling, seed=0, tests=(), batch_size=16):
    """-> (pairs, counts): one flat pair per question that had a failing answer among its n samples, with
    where it came from ("source": the record's place, as given in records' "_where") and why each answer
    was judged so; counts says how many questions were used, skipped and left out, and why."""
    counts = Counter()
    chosen_recs, seen = [], set()
    for rec in records:
        key = json.dumps(asked(rec["conversations"]), sort_keys=True, ensure_ascii=False)
        if not checkable(rec):
            counts["nothing to check an answer against"] += 1
        elif held_out(rec, tests):
            counts["asks a test question"] += 1
        elif key in seen:
            counts["asked before (once is enough)"] += 1
        else:
            seen.add(key)
            chosen_recs.append(rec)
    questions = [asked(r["conversations"]) for r in chosen_recs]
    answers = sample_answers(loaded, questions, n, sampling, seed, batch_size) if questions else []
    pairs = []
    for rec, prompt, got in zip(chosen_recs, questions, answers):
        pair, why = pair_of(rec, prompt, got)
        counts[why] += 1
        if pair is not None:
            pairs.append(pair)
    return pairs, counts


def pair_of(record, prompt, answers):
    """One question's pair from its sampled answers -> (pair or None, what happened, for the counts):
    chosen = the first passing answer that finished (one cut at max_new_tokens would teach stopping
    mid-sentence), else the record's reference (when it passes its own check); rejected = the first failing
    answer that finished, else the first failing one cut short (counted: it may have failed only for the cut)."""
    identity = record.get("identity") if isinstance(record.get("identity"), dict) else None
    verdicts = [judge(record, a, identity) for a in answers]
    if all(ok is None for ok, _ in verdicts):
        return None, "nothing to check an answer against"
    finished = [getattr(a, "finished", True) for a in answers]
    good = [a for a, (ok, _), done in zip(answers, verdicts, finished) if ok and done]
    bad = sorted(((not done, i) for i, ((ok, _), done) in enumerate(zip(verdicts, finished))
                  if ok is False and answers[i].strip()))
    if not bad:
        return None, "every answer passed (no pair)"
    if good:
        chosen, chosen_from = good[0], "model"
    else:
        chosen, chosen_from = reference(record), "reference"
        if not chosen or not judge(record, chosen, identity)[0]:
            return None, "the reference answer fails its own check"
    cut, i = bad[0]
    rejected, why = answers[i], verdicts[i][1]
    if chosen.strip() == rejected.strip():
        return None, "no answer to choose"
    pair = {"prompt": prompt, "chosen": chosen, "rejected": rejected, "source": record.get("_where"),
            "chosen_from": chosen_from, "rejected_why": why + (" (cut at --max_new_tokens)" if cut else ""),
            "passed": f"{sum(bool(ok) for ok, _ in verdicts)}/{len(answers)}"}
    return pair, f"pairs, chosen answer from the {chosen_from}" + (", rejected one cut short" if cut else "")
