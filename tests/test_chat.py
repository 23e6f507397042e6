"""The chat engine (chat/): the history fitted to the window, personas, retrieval and its cached index,
long-term memory across a restart."""
import json
import re

import pytest

from chat.engine import ChatEngine, with_passages
from chat.history import split_exchanges
from chat.memory import Memory
from chat.persona import load_persona, persona_prompt, shipped_personas
from chat.retrieval import open_index, split_passages, tokenize
from core.errors import UserError
from inference.prompt import build_prompt, prompt_budget
from inference.load import Loaded

from factories import default_tokenizer, make_model


def loaded_model(window=2048):
    """A tiny random model with its tokenizer, as inference.load loads one (a full SFT stage: it chats)."""
    return Loaded(make_model(max_position_embeddings=window), default_tokenizer(), {"stage": "full_sft"}, "tiny")


def exchange(i, words=6):
    return [{"role": "user", "content": f"question {i} " + "about music " * words},
            {"role": "assistant", "content": f"answer {i} " + "a long reply " * words}]


def test_window_keeps_system_and_newest_message_and_drops_oldest_whole_exchanges():
    loaded = loaded_model(window=768)
    persona = load_persona("tinymind")
    engine = ChatEngine(loaded, persona=persona)
    history = [m for i in range(30) for m in exchange(i)]
    turn = engine.prepare(history, "And the newest question?", max_new_tokens=64)
    whole = build_prompt(loaded.tokenizer, history, persona_prompt(persona))
    assert len(turn.ids) <= prompt_budget(768, 64) < len(whole)
    sent = turn.messages
    assert sent[0] == {"role": "system", "content": persona_prompt(persona)}
    assert sent[-1] == {"role": "user", "content": "And the newest question?"}
    kept = split_exchanges(sent[1:-1])
    assert 0 < len(kept) < 30 and turn.dropped == 30 - len(kept)
    assert [m for ex in kept for m in ex] == history[len(history) - 2 * len(kept):]     # the newest, whole
    # the prompt is exactly THE template's over what was kept: nothing cut inside a message
    assert turn.ids == build_prompt(loaded.tokenizer, sent[1:], persona_prompt(persona))
    # one more exchange would not have fitted
    more = history[len(history) - 2 * len(kept) - 2:] + [sent[-1]]
    assert len(build_prompt(loaded.tokenizer, more, persona_prompt(persona))) > prompt_budget(768, 64)


def test_history_that_fits_is_kept_whole_and_a_system_message_in_it_wins():
    loaded = loaded_model()
    engine = ChatEngine(loaded, system="Be brief.")
    history = [m for i in range(3) for m in exchange(i)]
    turn = engine.prepare(history, "next?", 32)
    assert turn.dropped == 0 and turn.messages[1:-1] == history
    turn = engine.prepare([{"role": "system", "content": "Be long."}] + history, "next?", 32)
    assert turn.messages[0]["content"] == "Be long."
    assert turn.ids == build_prompt(loaded.tokenizer, history + [turn.messages[-1]], "Be long.")


def test_shipped_personas_become_the_system_prompt():
    assert {"tinymind", "music_tutor", "bilingual"} <= set(shipped_personas())
    for name in shipped_personas():
        p = load_persona(name)
        text = persona_prompt(p)
        assert p.name in text and p.creator in text and p.decline in text
        assert all(ex["user"] in text and ex["assistant"] in text for ex in p.examples)
        assert p.identity["name"] == p.name
    tutor = load_persona("personas/music_tutor.yaml")
    assert tutor.name == "Melody" and "music" in tutor.personality


@pytest.mark.parametrize("text, says", [
    ("creator: x\n", "'name' is missing"),
    ("name: A\ncreator: B\nmood: happy\n", "unknown field 'mood'"),
    ("name: A\ncreator: B\nexamples:\n  - user: hi\n", "examples[0]"),
    ("name: A\ncreator: B\nbackground: {a: 1}\n", "'background'"),
    ("name: A\ncreator: B\ngreeting: [unclosed\n", ":4: not valid YAML"),
    ("- just a list\n", "a mapping of fields"),
])
def test_a_bad_persona_file_is_one_line_naming_the_field(tmp_path, text, says):
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match=re.escape(str(path)) + ".*" + re.escape(says)):
        load_persona(path)
    with pytest.raises(UserError, match="no shipped persona"):
        load_persona("no_such_persona")


def test_passages_overlap_and_cover_the_text():
    text = "\n\n".join(f"Paragraph {i} says fact number {i} about the oboe." for i in range(40))
    passages = split_passages(text, size=200, overlap=60)
    assert all(len(p) <= 200 for p in passages) and len(passages) > 5
    for a, b in zip(passages, passages[1:]):
        assert a.split(". ")[-1].rstrip(".") in b          # each passage repeats the end of the one before
    assert all(f"fact number {i} " in " ".join(passages) for i in range(40))


def write_docs(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "instruments.md").write_text("# Instruments\n\nThe oboe is a double-reed woodwind instrument.\n\n"
                                           "The cello is a bowed string instrument.\n", encoding="utf-8")
    (folder / "faq.jsonl").write_text(json.dumps({"instruction": "Who wrote Für Elise?", "output": "Beethoven"})
                                      + "\n", encoding="utf-8")
    return folder


def test_index_is_cached_and_rebuilt_when_a_file_changes(tmp_path):
    docs, out = write_docs(tmp_path / "docs"), tmp_path / "out"
    first = open_index(docs, out)
    assert first.rebuilt and first.search("double reed oboe", 1)[0].source == "instruments.md"
    assert first.search("Für Elise", 1)[0].source == "faq.jsonl:1"
    assert not open_index(docs, out).rebuilt                          # unchanged: read from out/index/
    assert list((out / "index").iterdir())[0].name.startswith("docs-")
    (docs / "instruments.md").write_text("The theremin is played without touching it.\n", encoding="utf-8")
    changed = open_index(docs, out)
    assert changed.rebuilt and changed.search("theremin", 1)[0].text.startswith("The theremin")
    assert changed.search("oboe", 3) == []                            # the old text is gone
    (docs / "new.txt").write_text("The sitar comes from India.\n", encoding="utf-8")
    assert open_index(docs, out).search("sitar", 1)[0].source == "new.txt"
    (docs / "new.txt").unlink()
    again = open_index(docs, out)
    assert again.rebuilt and again.search("sitar", 3) == []


def test_bad_documents_are_one_line(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        open_index(tmp_path / "none", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .txt, .md, .jsonl"):
        open_index(tmp_path / "empty", tmp_path / "out")
    bad = write_docs(tmp_path / "bad")
    (bad / "faq.jsonl").write_text('{"question": "q"}\n{oops\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"faq.jsonl:1: missing"):
        open_index(bad, tmp_path / "out")
    assert not (tmp_path / "out" / "index").exists() or not any((tmp_path / "out" / "index").iterdir())


def test_chinese_retrieval_splits_words_with_jieba(tmp_path):
    docs = tmp_path / "zh"
    docs.mkdir()
    (docs / "ci.md").write_text("《浣溪沙》作者晏殊：一曲新词酒一杯，去年天气旧亭台。\n\n"
                                "《念奴娇》作者苏轼：大江东去，浪淘尽，千古风流人物。\n\n"
                                "The violin has four strings.\n", encoding="utf-8")
    index = open_index(docs, tmp_path / "out", size=40, overlap=0)
    assert "新词" in tokenize("一曲新词酒一杯") and "词牌" in tokenize("这首词用的是哪个词牌？")
    top = index.search("“大江东去，浪淘尽”是哪位词人写的？", 1)[0]
    assert "苏轼" in top.text and "晏殊" not in top.text
    assert "晏殊" in index.search("一曲新词酒一杯用的是哪个词牌", 1)[0].text
    assert "violin" in index.search("How many strings does a violin have?", 1)[0].text


def test_retrieved_passages_and_their_sources_go_into_the_prompt(tmp_path):
    index = open_index(write_docs(tmp_path / "docs"), tmp_path / "out")
    engine = ChatEngine(loaded_model(), index=index, docs_k=2)
    turn = engine.prepare([], "What kind of instrument is the oboe?", 32)
    assert turn.passages[0].source == "instruments.md"
    assert turn.messages[-1]["content"] == with_passages("What kind of instrument is the oboe?", turn.passages)
    assert "(instruments.md) " in turn.messages[-1]["content"] and "double-reed" in turn.messages[-1]["content"]
    follow = engine.prepare([{"role": "user", "content": "Who wrote Für Elise?"},
                             {"role": "assistant", "content": "Beethoven."}], "When was he born?", 32)
    assert follow.passages[0].source == "faq.jsonl:1"     # the follow-up's subject is in the message before


def test_memory_brings_back_a_fact_pushed_out_of_the_window_after_a_restart(tmp_path):
    loaded = loaded_model(window=256)
    fact = "My favourite instrument is the oboe."
    engine = ChatEngine(loaded, memory=Memory.open("alice", tmp_path / "out"), memory_k=1)
    history = []
    for message in [fact] + [f"Filler question {i} about the weather today and tomorrow?" for i in range(12)]:
        turn, pieces = engine.reply(history, message, max_new_tokens=8)
        answer = "".join(pieces)
        history += [{"role": "user", "content": message}, {"role": "assistant", "content": answer}]
    assert len(engine.memory.turns) == 13 and (tmp_path / "out" / "memory" / "alice.jsonl").is_file()
    plain = ChatEngine(loaded).prepare(history, "Which instrument is my favourite?", 8)
    assert fact not in json.dumps(plain.messages)                       # pushed out of the window
    # a new process: the session's memory is read back from out/memory/
    restarted = ChatEngine(loaded, memory=Memory.open("alice", tmp_path / "out"), memory_k=1)
    for past in (history, []):
        turn = restarted.prepare(past, "Which instrument is my favourite?", 8)
        assert [t["user"] for t in turn.recalled] == [fact]
        assert turn.messages[0] == {"role": "user", "content": fact}
        assert turn.ids == build_prompt(loaded.tokenizer, turn.messages)        # exactly what was kept, uncut
        assert loaded.tokenizer.encode(fact)[2:] and \
            str(loaded.tokenizer.encode(fact))[1:-1] in str(turn.ids)          # its tokens are in the prompt
    # an exchange still in the window is not brought back twice
    recent = restarted.prepare(history[-2:], history[-2]["content"], 8)
    assert all(t["user"] != history[-2]["content"] for t in recent.recalled)


def test_a_bad_session_name_or_memory_file_is_one_line(tmp_path):
    for name in ("../x", "", "a/b", ".hidden"):
        with pytest.raises(UserError, match="--session"):
            Memory.open(name, tmp_path)
    path = tmp_path / "memory" / "bob.jsonl"
    path.parent.mkdir()
    path.write_text('{"user": "hi", "assistant": "hello"}\nnot json\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"bob.jsonl:2: not a remembered exchange"):
        Memory.open("bob", tmp_path)


def test_memory_never_pushes_out_the_newest_exchanges():
    """Remembered exchanges take at most a quarter of the room: the newest history stays."""
    loaded = loaded_model(window=640)
    history = [m for i in range(8) for m in exchange(i, words=10)]
    plain = ChatEngine(loaded).prepare(history, "question 0 again about music?", 16)

    class Remembers:                # a memory holding every exchange of the history
        turns = [{"user": history[i]["content"], "assistant": history[i + 1]["content"]}
                 for i in range(0, len(history), 2)]

        def recall(self, message, k, exclude=()):
            return [(i, t) for i, t in enumerate(self.turns) if i not in set(exclude)][:k]

    turn = ChatEngine(loaded, memory=Remembers(), memory_k=3).prepare(history, "question 0 again about music?", 16)
    kept = split_exchanges(plain.messages[:-1])
    assert turn.recalled and turn.recalled[0]["user"] == history[0]["content"]
    assert turn.messages[-1 - 2 * (len(kept) - 1):-1] == [m for ex in kept[1:] for m in ex]     # all but one kept
    assert len(turn.ids) <= prompt_budget(640, 16)


def test_documents_outside_the_folder_are_not_read(tmp_path):
    docs = write_docs(tmp_path / "docs")
    secret = tmp_path / "secret.txt"
    secret.write_text("the password is swordfish\n", encoding="utf-8")
    (docs / "link.txt").symlink_to(secret)
    (docs / ".hidden.md").write_text("swordfish hidden\n", encoding="utf-8")
    index = open_index(docs, tmp_path / "out")
    assert index.search("swordfish password", 3) == []


def test_names_that_are_not_utf8_are_indexed_and_shown_with_escapes(tmp_path, capsys):
    """A Linux name is bytes: a file, a subfolder and the --docs folder itself named with bytes that are no
    UTF-8 are indexed, their names shown as \\xNN escapes (sources, the folder), the index cached and read
    back, and eval_model.py --docs answers with them: nothing a UTF-8 stream refuses."""
    import os
    import eval_model
    from factories import make_checkpoint, run_main
    docs = os.fsencode(tmp_path) + b"/d\xe9ocs"
    os.makedirs(docs + b"/sub\xff")
    with open(docs + b"/caf\xe9.txt", "wb") as f:
        f.write(b"The cafe plays jazz piano music every night.\n")
    with open(docs + b"/sub\xff/notes.md", "wb") as f:
        f.write(b"Guitar chords: C, G, Am and F.\n")
    folder, out = os.fsdecode(docs), tmp_path / "out"
    index = open_index(folder, out)
    assert index.rebuilt and sorted(p.source for p in index.passages) == ["caf\\xe9.txt", "sub\\xff/notes.md"]
    assert index.search("jazz piano", 1)[0].source == "caf\\xe9.txt" and index.folder.name == "d\\xe9ocs"
    again = open_index(folder, out)
    assert not again.rebuilt and again.passages == index.passages
    turn = ChatEngine(loaded_model(), index=index).prepare([], "Where is jazz piano played?", 16)
    assert "(caf\\xe9.txt) " in turn.messages[-1]["content"]
    ckpt = make_checkpoint(out / "full_sft_64.pth")
    code, stdout, err = run_main(eval_model.main, ["--ckpt", str(ckpt), "--out_dir", str(out), "--docs", folder,
                                                   "--prompt", "jazz piano?", "--max_new_tokens", "4"], capsys)
    assert code == 0 and "[1] caf\\xe9.txt" in stdout, err
    stdout.encode("utf-8"), err.encode("utf-8")         # what a terminal would have been sent: no surrogate
