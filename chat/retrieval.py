"""Retrieval over your own documents: a folder of .txt, .md, .jsonl (texts or question/answer conversations, in
any format dataset/formats.py reads) and .pdf files
(through pypdf, if installed) split into overlapping passages, ranked by BM25 (bm25s; Chinese split into
words by jieba), the index cached under out/index/ and rebuilt when a file is added, removed or changed.
The chat engine (chat/engine.py) puts the top passages into the prompt with their sources; chat/memory.py
ranks remembered turns with the same BM25Index.

    from chat.retrieval import open_index
    index = open_index("dataset/knowledge/music", out="out")     # built once, then read from out/index/
    for p in index.search("Who was Johann Sebastian Bach?", k=5):
        print(p.source, p.score, p.text)
"""
import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from dataset.formats import iter_jsonl
from checkpoint import layout
from core.atomic import atomic_path
from core.errors import UserError

EXTENSIONS = (".txt", ".md", ".jsonl", ".pdf")
PASSAGE_CHARS = 400           # a passage's length (weight): about 70 English words, or 130 Chinese characters
OVERLAP_CHARS = 100           # the end of a passage that the next one repeats, so no fact is cut in two
INDEX_VERSION = 5             # raise when the passages or the tokens change, so old indexes are rebuilt
STOPWORDS = set("""a an the of in on at to for from by with and or but is are was were be been being am do does did
has have had it its this that these those what which who whom whose when where why how i you he she we they me him
her us them my your his our their as if than then so not no yes can could would should will shall may might must
about into over under up down out off there here also just any some such very too please tell me s t d ll m re ve
""".split()) | set(
    "的 了 是 吗 呢 吧 啊 呀 和 与 及 在 有 我 你 他 她 它 们 这 那 个 么 什么 哪 哪个 哪位 谁 请 一下 一个 是否 怎么 为什么 "
    "如何 中 上 下 也 都 就 还 又 把 被 给 对 从 向 之 其 而 或 以 于 写 首 这首 用".split())
WORD_RE = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+|[^\W_]+", re.UNICODE)
CJK_RE = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@dataclass
class Passage:
    source: str                 # the file it came from, relative to the documents folder
    text: str
    score: float = 0.0          # BM25 score for the query it was found for


def tokenize(text):
    """Lower-cased words for BM25: Chinese runs split by jieba, the rest on word boundaries; stop words out."""
    tokens = []
    for run in WORD_RE.findall(text.lower()):
        if CJK_RE.match(run):
            # search mode: a long word and the words in it ("普洱茶", "普洱"), so a part finds the whole
            tokens += [w for w in _jieba().cut_for_search(run) if w.strip() and w not in STOPWORDS]
        elif run not in STOPWORDS:
            tokens.append(stem(run))
    return tokens


def stem(word):
    """A plural's singular, roughly ("instruments" -> "instrument"), the same for documents and queries."""
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-3] + "y" if word.endswith("ies") else word[:-1]
    return word


def _jieba():
    import jieba
    jieba.setLogLevel(logging.WARNING)      # not "Building prefix dict..." on every start
    return jieba


class BM25Index:
    """BM25 (Robertson et al., Okapi at TREC-3) over lists of tokens, by bm25s; unknown query words ignored."""

    def __init__(self, token_lists=None, bm25=None):
        import bm25s
        self.bm25 = bm25 or bm25s.BM25()
        if bm25 is None:
            # an empty document still gets a token, so the corpus keeps one row per passage
            self.bm25.index([t or ["\u2205"] for t in token_lists], show_progress=False)

    def top(self, query, k):
        """[(row, score)] of the k best-scoring rows for a query text, best first, score > 0 only."""
        words = [w for w in tokenize(query) if w in self.bm25.vocab_dict]
        if not words or k <= 0:
            return []
        scores = self.bm25.get_scores(words)
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]
        return [(i, float(scores[i])) for i in order if scores[i] > 0]


def weight(text):
    """A text's length for passage sizes: a Chinese character counts as three letters (it carries about a
    word, and costs a byte-level tokenizer two or three tokens)."""
    return len(text) + 2 * len(CJK_RE.findall(text))


def cut(text, size):
    """Pieces of text each of weight at most size (a unit too long for one passage)."""
    pieces, start, w = [], 0, 0
    for i, ch in enumerate(text):
        w += weight(ch)
        if w > size:
            pieces.append(text[start:i])
            start, w = i, weight(ch)
    return [p for p in pieces + [text[start:]] if p.strip()]


def split_passages(text, size=PASSAGE_CHARS, overlap=OVERLAP_CHARS):
    """Passages of weight at most `size` (about that many letters) made of whole paragraphs (a long one
    split at sentence ends); each passage after the first starts with the last units of the one before, up
    to `overlap` of them."""
    units = []
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(para.split())
        if not para:
            continue
        if weight(para) <= size:
            units.append(para)
            continue
        for sent in re.split(r"(?<=[.!?。！？;；])\s*", para):
            units += cut(sent, size)
    passages, start = [], 0
    while start < len(units):
        end, length = start, 0
        while end < len(units) and (end == start or length + weight(units[end]) + 1 <= size):
            length += weight(units[end]) + 1
            end += 1
        passages.append(" ".join(units[start:end]))
        if end >= len(units):
            break
        back, kept = end, 0             # the next passage repeats the tail of this one
        while back - 1 > start and kept + weight(units[back - 1]) <= overlap:
            back -= 1
            kept += weight(units[back])
        start = back
    return passages


def read_document(path, rel):
    """[(text, source)] of one file: a text file whole; a .jsonl file one passage per record (record_text)."""
    if path.suffix.lower() == ".pdf":
        from pypdf import PdfReader
        try:
            pages = PdfReader(str(path)).pages
            return [(page.extract_text() or "", f"{rel} p{i + 1}") for i, page in enumerate(pages)]
        except Exception as e:      # noqa: BLE001 - a damaged PDF is named, whatever pypdf raises
            raise UserError(f"{path}: cannot read this PDF ({type(e).__name__}); fix or remove it") from None
    if path.suffix.lower() != ".jsonl":
        return [(read_bytes(path).decode("utf-8", errors="replace"), rel)]
    return [(record_text(rec), f"{rel}:{n}") for n, rec in iter_jsonl(path)]


def read_bytes(path):
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror}); fix its permissions or move it out of the folder") \
            from None


def record_text(record):
    """A JSONL record (any format TinyMind reads: dataset/formats.py) as a passage: its text, or its
    conversation as "Q: ... / A: ..." lines."""
    if "text" in record:
        return record["text"]
    return "\n".join(f"{'A' if m['role'] == 'assistant' else 'Q'}: {m['content']}" for m in record["conversations"]
                     if m["role"] in ("user", "assistant"))


def shown(name):
    """A file name as text: bytes that are no UTF-8 (Python holds them as lone surrogates, which no text
    file, JSON or terminal takes) shown as \\xNN escapes, so such a name is indexed and cited, never a crash."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def document_files(docs):
    """{name relative to docs (shown): path} of the files retrieval reads (pdf only when pypdf is installed)."""
    docs = Path(docs)
    if not docs.is_dir():
        what = "is a file, not a folder" if docs.is_file() else "no such folder"
        raise UserError(f"--docs {docs}: {what}; give a folder of .txt, .md, .jsonl or .pdf files")
    exts = EXTENSIONS if _has_pypdf() else tuple(e for e in EXTENSIONS if e != ".pdf")
    files = {}
    for p in sorted(docs.rglob("*")):
        rel = p.relative_to(docs)
        # hidden files, and links that lead out of the folder, are not read
        if p.is_file() and p.suffix.lower() in exts and not any(s.startswith(".") for s in rel.parts) \
                and layout.within(docs, p):
            files[shown(rel.as_posix())] = p
    if not files:
        pdf = "" if ".pdf" in exts else " (.pdf files need pypdf: pip install pypdf)"
        raise UserError(f"--docs {docs}: no {', '.join(exts)} files in it{pdf}")
    return files


def _has_pypdf():
    import importlib.util
    return importlib.util.find_spec("pypdf") is not None


def source_file(source):
    """The file a passage's source names ("songs.jsonl:12" and "notes.pdf p3" -> the file's name)."""
    return re.split(r":\d+$| p\d+$", source)[0]


class DocumentIndex:
    """The passages of a documents folder and their BM25 index; `rebuilt` says whether open_index made it now.
    folder: the documents folder as it is shown (a name's undecodable bytes as escapes: shown())."""

    def __init__(self, folder, passages, bm25, rebuilt, skipped=()):
        self.folder, self.passages, self.index, self.rebuilt = Path(shown(str(folder))), passages, bm25, rebuilt
        self.skipped = list(skipped)        # PDFs left out: pypdf is not installed

    def search(self, query, k=3):
        return [Passage(self.passages[i].source, self.passages[i].text, s) for i, s in self.index.top(query, k)]

    def describe(self):
        files = len({source_file(p.source) for p in self.passages})
        k = len(self.skipped)
        skipped = f"; {k} PDF file{'s' * (k != 1)} skipped (pip install pypdf)" if k else ""
        n = len(self.passages)
        return (f"{n:,} passage{'s' * (n != 1)} from {files} file{'s' * (files != 1)} "
                f"({'indexed now' if self.rebuilt else 'cached index'}){skipped}")


def fingerprint(files, size, overlap):
    """What the index depends on: each file's name and sha256, the splitting, the index version."""
    digests = {rel: hashlib.sha256(read_bytes(p)).hexdigest() for rel, p in files.items()}
    return {"version": INDEX_VERSION, "size": size, "overlap": overlap, "files": digests}


def open_index(docs, out=None, size=PASSAGE_CHARS, overlap=OVERLAP_CHARS):
    """The DocumentIndex of a folder: read from out/index/ if it was built from the same files (same
    contents) and settings, else built and written there (whole, atomically) first."""
    import bm25s
    docs = layout.resolve_input(docs)
    files = document_files(docs)
    skipped = [] if _has_pypdf() else sorted(p for p in docs.rglob("*") if p.suffix.lower() == ".pdf")
    where = layout.index_dir(layout.out_dir(out), docs)
    manifest = fingerprint(files, size, overlap)
    try:
        if json.loads((where / "manifest.json").read_text(encoding="utf-8")) == manifest:
            passages = [Passage(**json.loads(line)) for line in
                        (where / "passages.jsonl").read_text(encoding="utf-8").splitlines()]
            bm25 = bm25s.BM25.load(str(where / "bm25"), show_progress=False)
            if bm25.scores["num_docs"] == len(passages):     # else parts of two builds: build it again
                return DocumentIndex(docs, passages, BM25Index(bm25=bm25), False, skipped)
    except (OSError, ValueError, KeyError, TypeError):
        pass                        # missing, older or damaged: build it again
    passages = [Passage(source, text) for rel, path in files.items() for doc, source in read_document(path, rel)
                for text in split_passages(doc, size, overlap)]
    if not passages:
        raise UserError(f"--docs {docs}: its files hold no text")
    # the file's name is part of what a passage says ("instruments"), its line or page number is not
    index = BM25Index([tokenize(f"{Path(source_file(p.source)).stem.replace('_', ' ')} {p.text}")
                       for p in passages])
    with atomic_path(where) as tmp:
        tmp.mkdir(parents=True)
        index.bm25.save(str(tmp / "bm25"), show_progress=False)
        (tmp / "passages.jsonl").write_text("".join(json.dumps(asdict(p), ensure_ascii=False) + "\n"
                                                    for p in passages), encoding="utf-8")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return DocumentIndex(docs, passages, index, True, skipped)


def default_docs(docs, knowledge, off=False):
    """The documents a chat retrieves from: the ones given (--docs); else, unless retrieval is turned off
    (--no_docs), the knowledge base the model was trained to answer from (knowledge: the model's
    inference.load.Loaded.knowledge, or inference.load.recorded_knowledge of an adapter's meta, as the music
    bot's dataset/knowledge/music); else None. One rule for eval_model.py, the web demo, the server and the
    quickstart's report names."""
    if off:
        return None
    if docs:
        return docs
    if knowledge is not None and not knowledge.is_dir():
        logging.getLogger(__name__).warning("%s: the knowledge base the model records is missing; chatting "
                                            "without retrieval", knowledge)
        return None
    return knowledge
