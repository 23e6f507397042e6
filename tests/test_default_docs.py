"""Retrieval by default: a model that records a knowledge base (the music bot's dataset/knowledge/music, from its
training data's "knowledge") answers from it in eval_model.py, the web demo and the server, unless turned off
(--no_docs; the demo's "(none)"); --docs still names other documents.

    pytest tests/test_default_docs.py
"""
import json

import pytest

import eval_model
from factories import make_adapter, make_checkpoint, run_main, write_jsonl

QUESTION = "Who wrote Für Elise?"


@pytest.fixture
def out(tmp_path):
    """out/ with a tiny base and lora_music on it recording a knowledge base out/docs/kb (an absolute path, kept
    as it is; out/docs/ is where the web demo offers a visitor's own documents)."""
    out = tmp_path / "out"
    kb = out / "docs" / "kb"
    kb.mkdir(parents=True)
    (kb / "composers.md").write_text("Für Elise was written by Ludwig van Beethoven in 1810.\n", encoding="utf-8")
    base = make_checkpoint(out / "full_sft_64.pth")
    make_adapter(out / "lora" / "lora_music_64.pth", base, meta={"knowledge": str(kb)})
    return out


def task_file(tmp_path):
    return write_jsonl(tmp_path / "music.jsonl", [{"conversations": [{"role": "user", "content": QUESTION},
                                                                     {"role": "assistant", "content": "Beethoven"}],
                                                   "answers": ["Beethoven"]}])


def test_eval_model_retrieves_from_the_recorded_knowledge_base_unless_no_docs(out, tmp_path, capsys):
    task = task_file(tmp_path)
    common = ["--out_dir", str(out), "--lora_name", "lora_music", "--task_test", str(task), "--max_new_tokens", "2"]
    code, stdout, err = run_main(eval_model.main, common, capsys)
    assert code == 0, err
    assert f"documents: {out / 'docs' / 'kb'}: 1 passage from 1 file" in err and "knowledge base the model records" in err
    assert "retrieval hit@3 1/1" in stdout
    rep = json.loads((out / "eval" / "task_music_docs_lora_music_64.json").read_text(encoding="utf-8"))
    assert rep["results"][0]["sources"] == ["composers.md"]

    code, stdout, err = run_main(eval_model.main, common + ["--no_docs"], capsys)
    assert code == 0, err
    assert "documents:" not in err and "retrieval hit" not in stdout
    assert (out / "eval" / "task_music_lora_music_64.json").is_file()         # the adapter alone: no _docs

    code, _, err = run_main(eval_model.main, ["--out_dir", str(out), "--prompt", "hi", "--max_new_tokens", "2"], capsys)
    assert code == 0 and "documents:" not in err                     # a model that records none: plain chat


def test_eval_model_docs_wins_and_no_docs_with_docs_is_one_line(out, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.md").write_text("The oboe is a double-reed woodwind instrument.\n", encoding="utf-8")
    code, _, err = run_main(eval_model.main, ["--out_dir", str(out), "--lora_name", "lora_music", "--docs", str(other),
                                              "--prompt", "What is an oboe?", "--max_new_tokens", "2"], capsys)
    assert code == 0 and f"documents: {other}" in err and "kb" not in err
    code, _, err = run_main(eval_model.main, ["--out_dir", str(out), "--docs", str(other), "--no_docs"], capsys)
    assert code == 2 and err.strip() == "error: --docs and --no_docs: give one (--docs DIR retrieves from DIR, " \
                                        "--no_docs from nothing)"


def test_a_recorded_knowledge_base_that_is_gone_is_a_warning(out, capsys, caplog):
    import shutil
    shutil.rmtree(out / "docs" / "kb")
    code, _, err = run_main(eval_model.main, ["--out_dir", str(out), "--lora_name", "lora_music", "--prompt", "hi",
                                              "--max_new_tokens", "2"], capsys)
    assert code == 0 and "documents:" not in err
    assert "the knowledge base the model records is missing; chatting without retrieval" in caplog.text


def test_web_demo_starts_on_the_models_knowledge_base_and_follows_the_model(out, monkeypatch):
    pytest.importorskip("streamlit")
    from test_web_demo import app
    at = app(monkeypatch, out)
    assert not at.exception
    assert at.sidebar.selectbox(key="adapter").value == "lora/lora_music_64.pth"
    assert at.sidebar.selectbox(key="docs").value == "out/docs/kb"
    assert any("(the model's knowledge base)" in c.value for c in at.sidebar.caption)
    at.sidebar.selectbox(key="adapter").set_value("(none)").run()         # a model that records none: no documents
    assert at.sidebar.selectbox(key="docs").value == "(none)"
    at.sidebar.selectbox(key="adapter").set_value("lora/lora_music_64.pth").run()
    assert at.sidebar.selectbox(key="docs").value == "out/docs/kb"
    at.sidebar.number_input(key="max_new_tokens").set_value(2)
    at.chat_input[0].set_value(QUESTION).run()
    assert at.session_state.messages[-1]["sources"][0]["source"] == "composers.md"
    at.sidebar.selectbox(key="docs").set_value("(none)").run()            # the visitor turns it off: kept
    at.sidebar.selectbox(key="adapter").set_value("(none)").run()
    at.sidebar.selectbox(key="adapter").set_value("lora/lora_music_64.pth").run()
    assert not at.exception and at.sidebar.selectbox(key="docs").value == "(none)"


@pytest.mark.filterwarnings("ignore:.*copying from a non-meta parameter")      # listing builds on the meta device
def test_server_models_retrieve_from_their_knowledge_base_unless_no_docs(out):
    from serving.api import chat_of, plan
    from serving.body import check_body
    from serving.engine import Engine
    from scripts.serve_openai_api import parse_args
    from core.errors import UserError
    asked = check_body({"model": "full_sft_64+lora_music_64", "max_tokens": 2,
                        "messages": [{"role": "user", "content": QUESTION}]}, 2048)
    worker = Engine(out, max_rows=2).worker(asked.model)
    assert worker.index is not None and Engine(out).worker("full_sft_64").index is None
    _, _, passages = plan(worker.loaded, asked, 2048, chat_of({"persona": None, "docs_k": 3, "index": None}, worker))
    assert [p.source for p in passages] == ["composers.md"]
    off = Engine(out, max_rows=2, recorded_docs=False).worker(asked.model)
    assert off.index is None
    assert plan(off.loaded, asked, 2048, chat_of({"docs_k": 3, "index": None}, off))[2] == []
    assert not parse_args(["--no_docs"]).docs
    with pytest.raises(UserError, match="--docs and --no_docs: give one"):
        parse_args(["--docs", str(out), "--no_docs"])
