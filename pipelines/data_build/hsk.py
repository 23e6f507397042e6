"""hsk-sentences-audio: HSK example sentences with their English translations, as SFT translation requests in
both directions. Part of `python scripts/build_data.py`.
"""
import json

from pipelines.data_build.packages import find, read_text
from pipelines.data_build.records import conv


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
