"""scripts/compare_lora.py (evaluation/compare.py): base, adapter and adapter + retrieval side by side on tiny
question sets, the table and the answers' JSON; evaluation.scoring.is_unsure.

    pytest tests/test_compare.py
"""
import json

import pytest

import evaluation.answer_tests
from evaluation import compare
from evaluation.scoring import is_unsure
from factories import make_adapter, make_checkpoint, run_main, write_jsonl
from scripts import compare_lora

IDENTITY = {"name": "Melody", "creator": "Ada Lab"}


def qa(question, answer, golds):
    return {"conversations": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
            "answers": golds}


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """out/ with a tiny base and an adapter on it that records an identity and a knowledge base (an absolute
    path: kept as it is), and tiny question sets in place of the shipped ones -> (out, knowledge folder)."""
    out, kb = tmp_path / "out", tmp_path / "kb"
    kb.mkdir()
    (kb / "composers.md").write_text("Für Elise was written by Ludwig van Beethoven in 1810.\n", encoding="utf-8")
    base = make_checkpoint(out / "full_sft_64.pth")
    make_adapter(out / "lora" / "lora_music_64.pth", base, meta={"identity": IDENTITY, "knowledge": str(kb)})
    files = {"music_known": write_jsonl(tmp_path / "known.jsonl", [qa("Who wrote Für Elise?", "Beethoven.",
                                                                      ["Beethoven"]),
                                                                   qa("How many keys has a piano?", "88.", ["88"])]),
             "general": write_jsonl(tmp_path / "general.jsonl", [qa("What is the capital of France?", "Paris.",
                                                                   ["Paris"])]),
             "identity": write_jsonl(tmp_path / "identity.jsonl", [
                 {"conversations": [{"role": "user", "content": "Who are you?"}], "ask": "name"},
                 {"conversations": [{"role": "user", "content": "Who made you?"}], "ask": "creator"}])}
    for name, path in files.items():
        monkeypatch.setitem(compare.SETS, name, str(path))
    return out, kb


def fake_answers(monkeypatch):
    """The arms answer by script: the base is never sure, the adapter knows who it is and guesses Paris, and
    with the passages in its prompt it names Beethoven."""
    def answer_prompts(loaded, prompts, sampling):
        texts = []
        for ids in prompts:
            prompt = loaded.tokenizer.decode(ids)
            if not loaded.info.get("adapter"):
                texts.append("I'm not sure, I don't know.")
            elif "Beethoven" in prompt:             # the passage is in the prompt: the retrieval arm
                texts.append("I'm Melody, made by Ada Lab. Beethoven.")
            else:
                texts.append("I'm Melody, made by Ada Lab. Paris.")
        return texts
    monkeypatch.setattr(evaluation.answer_tests, "answer_prompts", answer_prompts)


def test_three_arms_side_by_side(setup, monkeypatch, capsys):
    out, kb = setup
    fake_answers(monkeypatch)
    code, _, err = run_main(compare_lora.main, ["--out_dir", str(out), "--lora_name", "lora_music",
                                                     "--max_new_tokens", "4"], capsys)
    assert code == 0, err
    md = (out / "eval" / "compare_lora_music.md").read_text(encoding="utf-8")
    assert "| set | base | adapter | adapter+retrieval |" in md
    assert "| music_known (known.jsonl) | 0% (0/2) | 0% (0/2) | 50% (1/2) |" in md
    assert "| identity (identity.jsonl) | 0% (0/2) | 100% (2/2) | 100% (2/2) |" in md
    assert "| general (general.jsonl) | 0% (0/1) | 100% (1/1) | 100% (1/1) |" in md      # nothing retrieved
    # not correct: unsure (the base) or wrong and confident (the adapter's guesses)
    assert "| music_known (known.jsonl) | unsure 100% (2/2), wrong 0% (0/2) | unsure 0% (0/2), wrong 100% (2/2) " \
           "| unsure 0% (0/2), wrong 50% (1/2) |" in md
    assert "Retrieval hit@3 (a gold answer in the passages given): music_known 1/2" in md
    assert "python scripts/compare_lora.py --out_dir" in md and str(kb) in md
    assert "Identity checked: Melody by Ada Lab (from the adapter's training data)" in md
    rep = json.loads((out / "eval" / "compare_lora_music.json").read_text(encoding="utf-8"))
    assert list(rep["arms"]) == ["base", "adapter", "adapter+retrieval"]
    base, adapter, rag = (rep["arms"][a]["sets"] for a in rep["arms"])
    assert [r["verdict"] for r in base["music_known"]["results"]] == ["unsure", "unsure"]
    assert [r["verdict"] for r in rag["music_known"]["results"]] == ["correct", "wrong"]
    assert rag["music_known"]["results"][0]["sources"] == ["composers.md"]
    assert adapter["identity"]["correct"] == 2 and "sources" not in adapter["music_known"]["results"][0]
    assert not rep["arms"]["base"]["model"].get("adapter") and rep["arms"]["adapter"]["model"]["adapter"]
    assert rep["docs"] == str(kb) and rep["settings"]["max_new_tokens"] == 4


def test_really_decodes_and_scores_benchmarks(setup, bench_cache, capsys):
    """No fakes: the tiny models answer (a few tokens) and score ARC-Easy's first items, one row per metric."""
    out, _ = setup
    code, _, err = run_main(compare_lora.main, ["--out_dir", str(out), "--lora_name", "lora_music", "--limit", "1",
                                                "--max_new_tokens", "3", "--tasks", "music_known,general",
                                                "--bench", "arc_easy", "--bench_limit", "2", "--device", "cpu"], capsys)
    assert code == 0, err
    md = (out / "eval" / "compare_lora_music.md").read_text(encoding="utf-8")
    assert "| arc_easy (acc, log-likelihood) |" in md and "| as adapter |" in md
    assert "(0/1)" in md or "(1/1)" in md
    rep = json.loads((out / "eval" / "compare_lora_music.json").read_text(encoding="utf-8"))
    assert rep["arms"]["base"]["bench"]["arc_easy"]["acc"]["n"] == 2
    assert list(rep["arms"]["adapter"]["sets"]) == ["music_known", "general"]
    assert all(len(a["sets"]["music_known"]["results"]) == 1 for a in rep["arms"].values())


@pytest.mark.parametrize("argv, says", [
    (["--lora_name", "lora_nope"], "no adapter named 'lora_nope'"),
    (["--lora_name", "lora_music", "--tasks", "music,general"], "--tasks 'music,general': give one or more of"),
    (["--lora_name", "lora_music", "--limit", "0"], "--limit must be an integer at least 1"),
    (["--lora_name", "lora_music", "--docs", "no/such/folder"], "no such folder; give the documents with --docs"),
    (["--lora_name", "lora_music", "--bench", "arc_easy"], "benchmark items not found"),
])
def test_bad_flags_are_one_line_before_any_model_loads(setup, argv, says, capsys, monkeypatch, tmp_path):
    out, _ = setup
    monkeypatch.setenv("TINYMIND_CACHE", str(tmp_path / "no_cache"))
    monkeypatch.setattr(compare, "load_for_inference", lambda *a, **k: pytest.fail("a model was loaded"))
    code, _, err = run_main(compare_lora.main, ["--out_dir", str(out), *argv], capsys)
    assert code == 2
    line, = err.strip().splitlines()
    assert says in line, line
    assert not (out / "eval").exists()


def test_an_adapter_without_identity_is_scored_against_the_test_files(setup, monkeypatch, capsys, tmp_path):
    out, kb = setup
    make_adapter(out / "lora" / "lora_plain_64.pth", out / "full_sft_64.pth")
    code, _, err = run_main(compare_lora.main, ["--out_dir", str(out), "--lora_name", "lora_plain"], capsys)
    assert code == 2 and "records no identity and the identity test names none" in err
    named = {"conversations": [{"role": "user", "content": "Who are you?"}], "ask": "name", "identity": IDENTITY}
    monkeypatch.setitem(compare.SETS, "identity", str(write_jsonl(tmp_path / "named.jsonl", [named])))
    fake_answers(monkeypatch)
    code, _, err = run_main(compare_lora.main, ["--out_dir", str(out), "--lora_name", "lora_plain",
                                                     "--tasks", "identity", "--docs", str(kb)], capsys)
    assert code == 0, err
    md = (out / "eval" / "compare_lora_plain.md").read_text(encoding="utf-8")
    assert "Identity checked: Melody by Ada Lab (from the identity test file)" in md


@pytest.mark.parametrize("text", ["I'm not sure. I don't know the answer to that, and I won't guess.",
                                  "我不确定，不知道这个问题的答案，我不想乱猜。", "I don’t know.", "I am NOT certain.",
                                  "Honestly, I have no idea."])
def test_is_unsure_finds_saying_so(text):
    assert is_unsure(text)


@pytest.mark.parametrize("text", ["The Beatles.", "Make sure the strings are tuned.", "是贝多芬。", "Ensure it is 88.",
                                  "It is known as a sonata."])
def test_is_unsure_leaves_answers_alone(text):
    assert not is_unsure(text)


def test_a_base_changed_since_training_is_refused_before_any_question(setup, monkeypatch, capsys):
    out, _ = setup
    make_checkpoint(out / "full_sft_64.pth", seed=3)                   # retrained: another file of the same name
    monkeypatch.setattr(evaluation.answer_tests, "answer_prompts", lambda *a: pytest.fail("a question was asked"))
    code, _, err = run_main(compare_lora.main, ["--out_dir", str(out), "--lora_name", "lora_music"], capsys)
    assert code == 2 and "full_sft_64.pth" in err.strip().splitlines()[-1]
    assert not (out / "eval" / "compare_lora_music.md").exists()
