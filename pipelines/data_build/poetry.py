"""chinese-poetry: Song lyrics (宋词) and their tunes (词牌), Tang poems (traditional characters, made simplified),
the Analects and the Book of Songs, as pretraining text (poetry_docs), music questions about a lyric's 词牌 and
poet (ci_music) and the 词牌 part of the music knowledge base (ci_knowledge). Part of `python scripts/build_data.py`.
"""
import json

from pipelines.data_build.packages import find, read_text


def songci(dirs):
    out = []
    for p in find(dirs["chinese_poetry"], "songci/ci.song.*.json"):
        out += [c for c in json.loads(read_text(p)) if c.get("paragraphs") and c.get("rhythmic")]
    return out


def cipai(c):
    """The tune (词牌) of a Song lyric: its "rhythmic" without the title that may follow "・" or "·"."""
    return c["rhythmic"].split("・")[0].split("·")[0].strip()


def poetry_docs(dirs, cc):
    """{"songci", "tang", "classics": [document, ...]} for the pretraining text; cc: traditional->simplified."""
    root = dirs["chinese_poetry"]
    g = {"songci": [f"{c['rhythmic']}\n{c['author']}\n" + "\n".join(c["paragraphs"]) for c in songci(dirs)]}
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


def ci_music(dirs, rng, n):
    out = []
    cis = songci(dirs)
    rng.shuffle(cis)
    seen = set()
    for c in cis:
        first = c["paragraphs"][0].strip()
        tune = cipai(c)
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


def ci_knowledge(dirs):
    """cipai.jsonl: for each 词牌 of the Song lyrics, how many lyrics use it and by whom; then every lyric's
    tune, author and opening line."""
    cis = songci(dirs)
    tunes = {}
    for c in cis:
        tunes.setdefault(cipai(c), []).append(c)
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
        tune = cipai(c)
        lines.append(f"《{tune}》（词牌{tune}），作者{c['author']}：{first}")
    return {"cipai.jsonl": notes, "songci_first_lines.jsonl": lines}
