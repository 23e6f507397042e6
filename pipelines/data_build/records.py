"""The records the data build writes: a chat record, its rough length in tokens, a sample balanced over what
records ask, and a .jsonl file written in the one fixed formatting (dataset.formats.dumps) through core.atomic.
Part of `python scripts/build_data.py`.
"""
import os

from core.atomic import atomic_open
from dataset.formats import dumps

SYSTEM_EN = ["You are a helpful assistant.", "You are a helpful assistant. Answer briefly.",
             "You are a friendly assistant who gives short, accurate answers."]
SYSTEM_ZH = ["你是一个乐于助人的助手。", "你是一个知识渊博的助手，请简洁地回答。"]


def approx_tokens(text):
    cjk = sum("\u4e00" <= ch <= "\u9fff" for ch in text)
    return cjk + (len(text) - cjk) / 2


def conv(*turns, system=None):
    msgs = [{"role": "system", "content": system}] if system else []
    for i, t in enumerate(turns):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": t.strip()})
    return {"conversations": msgs}


def balanced_sample(records, n, rng):
    """n records taken in turn from each kind (their "ask"), each kind shuffled: a small kind is taken whole."""
    kinds = {}
    for r in records:
        kinds.setdefault(str(r.get("ask")), []).append(r)
    queues = [rng.sample(kinds[k], len(kinds[k])) for k in sorted(kinds)]
    picked = []
    while len(picked) < min(n, len(records)):
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop())
    return picked


def write_jsonl(path, records):
    with atomic_open(path) as f:
        for r in records:
            f.write(dumps(r) + "\n")
    return len(records), os.path.getsize(path)
