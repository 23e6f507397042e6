"""The music recipe's parts (pipelines/data_build/raft.py): passages in the training prompts in the chat
engine's own format, "not sure" where neither the passages nor the base know, personas over the learned
identity, the knowledge base recorded by the trainer; and a tiny model trained on such records that says it
is not sure when a question comes without a passage that answers it."""
import json
import random

import pytest
import torch

from chat.engine import with_passages
from chat.persona import Persona, load_persona, persona_prompt, shipped_personas
from chat.retrieval import open_index
from core.errors import UserError
from evaluation.answer_tests import answer_batch, passages_hold
from evaluation.scoring import is_unsure
from inference.load import Loaded
from pipelines.data_build.raft import (KNOWLEDGE, PERSONAS, UNSURE, as_chatted, persona_identity, raft_records,
                                       replay_records, general_questions)
from tokenizer.tokenizer import encode_chat
from trainer.stage import data_knowledge
from tests.factories import default_tokenizer, make_model

FACTS = [("Who composed the Lantern Suite?", "Orla Venn"), ("Who wrote the Copper Waltz?", "Ivo Brandt"),
         ("Who composed the Harbor Symphony?", "Mira Sol"), ("Which band recorded Glass Rivers?", "The Tidewater"),
         ("Who composed the opera Winter Gate?", "Pell Arden"), ("Who wrote the Salt Road Overture?", "Kai Moreau")]


@pytest.fixture
def kb(tmp_path):
    folder = tmp_path / "kb"
    folder.mkdir()
    lines = [{"text": f"Question: {q} Answer: {a}."} for q, a in FACTS]
    lines += [{"text": f"The {w} is a kind of drum played with sticks."} for w in ("tabor", "snare", "bongo")]
    (folder / "facts.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return open_index(folder, tmp_path / "out")


def test_passages_in_training_prompts_are_the_chat_engines(kb):
    items = [(q, f"The answer is {a}.", [a]) for q, a in FACTS] * 8
    records, counts = raft_records(items, kb, [False] * len(items), random.Random(0))
    assert counts["passages"] and counts["distractors"] and counts["none"]
    assert counts["unsure"] < len(items) / 3         # not known: mostly asked with the passage that answers
    assert any(r["raft"] == "distractors" and r["conversations"][0]["content"] != q
               for r, (q, _, _) in zip(records, items))
    for (q, reply, golds), rec in zip(items, records):
        user, target = rec["conversations"][0]["content"], rec["conversations"][1]["content"]
        assert rec["knowledge"] == KNOWLEDGE
        if rec["raft"] == "passages":
            passages = kb.search(q, k=3)
            assert user == with_passages(q, passages)       # exactly what the chat puts before a message
            assert passages_hold(passages, golds) and target == reply
        elif rec["raft"] == "distractors":
            assert golds[0] not in user                      # passages (those BM25 finds), none the answer
            assert target == UNSURE["en"]                    # neither the passages nor the base know
        else:
            assert user == q and target == UNSURE["en"]


def test_the_base_knowing_keeps_the_answer(kb):
    items = [(q, f"The answer is {a}.", [a]) for q, a in FACTS]
    records, counts = raft_records(items, kb, [True] * len(items), random.Random(1))
    assert counts["unsure"] == 0 and counts["passages"] == 0     # known: asked with distractors or alone
    assert all(r["conversations"][1]["content"] == reply for r, (_, reply, _) in zip(records, items))
    # with the base's own answers: those are the targets (its own words, as the replay), a cut one (None) not
    own = [f"It was {a}, I believe." for _, a in FACTS[:-1]] + [None]
    records, _ = raft_records(items, kb, [True] * len(items), random.Random(1), own=own)
    assert [r["conversations"][1]["content"] for r in records] == own[:-1] + [items[-1][1]]


def test_chinese_questions_get_the_chinese_unsure(kb):
    records, _ = raft_records([("《某某》用的是哪个词牌？", "用的是某某。", ["某某"])] * 6, kb, [False] * 6, random.Random(2))
    assert {r["conversations"][1]["content"] for r in records} == {UNSURE["zh"]}


def test_persona_identity_answers_as_the_persona():
    records = persona_identity(random.Random(0), 20)
    shipped = {load_persona(p).name for p in shipped_personas()}
    for rec in records:
        system, user, answer = (m["content"] for m in rec["conversations"])
        name = rec["persona"]
        creator = dict(PERSONAS)[name]
        assert system.startswith(persona_prompt(Persona(name=name, creator=creator)).split("\n")[0] + "\n")
        assert system.endswith("never claim to be another assistant.") or "Example - User:" in system
        assert name in answer or creator in answer
        assert "TinyMind" not in answer and "identity" not in rec
    assert not shipped & {r["persona"] for r in records}     # the shipped personas stay held out
    # as full as a persona file's prompt in some, bare in others (chat.persona.persona_prompt's parts)
    sizes = {len(r["conversations"][0]["content"].splitlines()) for r in records}
    assert min(sizes) == 2 and max(sizes) >= 5
    # every third persona made by the bot's own creator, as the shipped Melody and Mei are: the name given wins
    own = {"name": "TinyMind", "creator": "the TinyMind project", "creator_zh": "TinyMind 项目"}
    records = persona_identity(random.Random(0), 30, own)
    same = [r for r in records if "created by the TinyMind project" in r["conversations"][0]["content"]]
    assert len(same) == 10 and all(r["conversations"][0]["content"].startswith(f"You are {r['persona']},") for r in same)
    assert all("TinyMind 项目" in r["conversations"][0]["content"] for r in same)
    assert not any("I'm TinyMind" in r["conversations"][-1]["content"] or "我是TinyMind，" in r["conversations"][-1]["content"]
                   for r in records)


def test_replay_keeps_only_what_the_base_got_right():
    out = replay_records(["Capital of France?", "Capital of Peru?", "Hi!", "Tell me a story."],
                         ["Paris.", "Quito.", "Hello! How can I help?", "Once upon a"], [["Paris"], ["Lima"], None, None],
                         finished=lambda a: a != "Once upon a")
    assert [r["conversations"][1]["content"] for r in out] == ["Paris.", "Hello! How can I help?"]


def test_general_questions_are_asked_once_and_chat_trivia_keeps_its_answer():
    """A replayed answer to a trivia question found among ChatterBot's small talk must be right too (the
    base once taught "the male platypus" for "Honeybee"), and a question comes once (one had come 7 times)."""
    chat = lambda q, a: {"conversations": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
    chats = [chat("Which insect's males die on mating?", "Honeybee"), chat("My internet is not working.",
             "Restart your router and check if the cable is plugged in."), chat("My internet is NOT working!", "Hm.")]
    qa = [("Capital of France?", ["Paris"]), ("capital of  france", ["Paris"]), ("Who wrote Swan Lake's music?", ["x"]),
          ("Held out?", ["y"])]
    got = dict(general_questions(qa, chats, random.Random(0), held_out=["held OUT"]))
    assert got == {"Which insect's males die on mating?": ["Honeybee"], "My internet is not working.": None,
                   "Capital of France?": ["Paris"]}


def test_identity_and_replay_are_trained_as_they_are_chatted(kb):
    rec = {"conversations": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                             {"role": "user", "content": "Who composed the Lantern Suite for you?"},
                             {"role": "assistant", "content": "I'm TinyMind."}], "identity": {"name": "TinyMind"}}
    out = [as_chatted(rec, kb, random.Random(i)) for i in range(20)]
    asked = rec["conversations"][2]["content"]
    with_docs = [o for o in out if o["conversations"][2]["content"] != asked]
    assert 0 < len(with_docs) < 20                                    # about half
    for o in with_docs:
        assert o["conversations"][2]["content"] == with_passages(asked, kb.search(asked, k=3))
        assert o["conversations"][0] == rec["conversations"][0] and o["identity"] == rec["identity"]


def test_the_trainer_records_one_knowledge_base():
    assert data_knowledge([{"knowledge": KNOWLEDGE}, {}], "m.jsonl") == KNOWLEDGE
    assert data_knowledge([{}], "m.jsonl") is None
    with pytest.raises(UserError, match="2 knowledge bases"):
        data_knowledge([{"knowledge": "a"}, {"knowledge": "b"}], "m.jsonl")


def test_a_tiny_model_trained_on_the_recipe_says_it_is_not_sure(kb):
    """Trained on passages that answer (-> the answer) and on questions without them (-> UNSURE), a tiny
    model says it is not sure of a new question asked alone, and answers one asked with its passage."""
    tok = default_tokenizer()
    torch.manual_seed(0)
    model = make_model(max_position_embeddings=512)
    train = []
    for i in range(24):
        q, a = f"Who composed piece number {i}?", f"Composer {chr(65 + i % 26)}"
        passage = [type("P", (), {"source": "facts.jsonl", "text": f"Piece number {i} was composed by {a}."})()]
        train.append([{"role": "user", "content": with_passages(q, passage)},
                      {"role": "assistant", "content": f"It was composed by {a}."}])
        train.append([{"role": "user", "content": f"Who wrote song {i} of the {chr(97 + i)} set?"},
                      {"role": "assistant", "content": UNSURE["en"]}])
    seqs = [encode_chat(tok, m) for m in train]
    width = max(len(ids) for ids, _ in seqs)
    x = torch.tensor([ids + [tok.pad_id] * (width - len(ids)) for ids, _ in seqs])
    labels = torch.tensor([[t if m else -100 for t, m in zip(ids, mask)] + [-100] * (width - len(ids))
                           for ids, mask in seqs])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for step in range(90):
        rows = torch.randperm(len(seqs))[:12]
        model(x[rows], labels=labels[rows]).loss.backward()
        opt.step()
        opt.zero_grad()
    loaded = Loaded(model.eval(), tok, {"stage": "full_sft"}, "tiny")
    sampling = {"temperature": 0.0, "max_new_tokens": 40}
    alone, with_one = answer_batch(loaded, [   # new questions: one asked alone, one with its passage
        [{"role": "user", "content": "Who wrote song 99 of the z set?"}],
        [{"role": "user", "content": train[0][0]["content"].replace("number 0", "number 50")}]], sampling)
    assert alone.startswith(UNSURE["en"][:40]) and is_unsure(alone)
    assert not is_unsure(with_one) and with_one.startswith("It was")
