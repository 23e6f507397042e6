"""scripts/make_pairs.py: pairs from a model's own sampled answers, judged by the strict scorers; test
questions left out; the same pairs however the answers are batched; trainer/train_dpo.py reads them.

    pytest tests/test_make_pairs.py
"""
import json

import pytest

import scripts.make_pairs as mp
import trainer.train_dpo as td
from evaluation.pairs import held_out, pair_of, questions_asked_by
from factories import FAST, make_checkpoint, run_main, write_jsonl

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {"name": "TinyMind", "creator": "the TinyMind project"}


def qa(question, answer, **extra):
    return {"conversations": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
            **extra}


def test_a_pair_chooses_a_passing_answer_else_the_reference_and_rejects_a_failing_one():
    rec = qa("Which instrument has 88 keys?", "The piano has 88 keys.", answers=["piano"])
    prompt = rec["conversations"][:1]
    pair, why = pair_of(rec, prompt, ["A guitar.", "It is the piano.", "A drum."])
    assert pair["chosen"] == "It is the piano." and pair["rejected"] == "A guitar." and pair["passed"] == "1/3"
    assert pair["chosen_from"] == "model" and why == "pairs, chosen answer from the model"
    pair, why = pair_of(rec, prompt, ["A guitar.", "A drum."])
    assert pair["chosen"] == "The piano has 88 keys." and pair["chosen_from"] == "reference"
    assert pair_of(rec, prompt, ["The piano.", "piano"]) == (None, "every answer passed (no pair)")
    # identity questions are judged against the identity the record carries
    ident = qa("Who made you?", "The TinyMind project made me.", ask="creator", identity=TINY)
    pair, _ = pair_of(ident, ident["conversations"][:1], ["OpenAI made me.", "I was made by the TinyMind project."])
    assert pair["rejected"] == "OpenAI made me." and pair["chosen"] == "I was made by the TinyMind project."


def test_test_questions_are_found_inside_a_retrieval_prompt():
    tests = questions_asked_by([qa("What is a chord?", "x"), qa("hi", "x")])     # too short to match on: dropped
    raft = qa("Use the passages below.\n[1] ...\n\nQuestion: what is a CHORD?", "y", answers=["notes"])
    assert held_out(raft, tests) and not held_out(qa("What is a scale?", "z", answers=["notes"]), tests)
    assert not held_out(qa("hi there, how are you today", "z"), tests)


def test_the_command_writes_pairs_dpo_trains_on_and_leaves_test_questions_out(tmp_path, capsys):
    out = tmp_path / "out"
    make_checkpoint(out / "full_sft_64.pth", std=0.08)
    data = write_jsonl(tmp_path / "q.jsonl", [
        qa("Which instrument has 88 keys?", "The piano.", answers=["piano"]),
        qa("Who made you?", "The TinyMind project made me.", ask="creator", identity=TINY),
        qa("Who made you?", "The TinyMind project made me.", ask="creator", identity=TINY),     # asked again
        qa("Tell me a joke", "No."),                                                          # nothing to check
        qa("What is a chord in music theory?", "Notes together.", answers=["notes"]),          # a test question
    ])
    test = write_jsonl(tmp_path / "test.jsonl", [qa("What is a chord in music theory?", "Notes.", answers=["notes"])])
    pairs = tmp_path / "pairs.jsonl"
    args = ["--model", "full_sft", "--out_dir", str(out), "--data", str(data), "--exclude", str(test), "--n", "3",
            "--max_new_tokens", "8", "-o", str(pairs)]
    code, stdout, err = run_main(mp.main, args, capsys)
    assert code == 0, err
    rows = [json.loads(x) for x in pairs.read_text().splitlines()]
    assert [r["source"].rsplit(":", 1)[1] for r in rows] == ["1", "2"]
    assert all(r["chosen_from"] == "reference" for r in rows)          # a random model passes nothing
    for says in ("2 pairs", "1 questions: asks a test question", "1 questions: nothing to check",
                 "1 questions: asked before"):
        assert says in stdout, stdout
    # the same pairs whatever the batching: each answer has its own seed
    again = tmp_path / "again.jsonl"
    assert run_main(mp.main, [*args[:-1], str(again), "--batch_size", "1"], capsys)[0] == 0
    assert again.read_text() == pairs.read_text()
    # trainer/train_dpo.py reads them as they are
    code, _, err = run_main(td.main, ["--base", str(out / "full_sft_64.pth"), "--data_path", str(pairs), "--val_ratio",
                                      "0", "--out_dir", str(out), *FAST, "--max_steps", "2"], capsys)
    assert code == 0, err


def test_an_output_that_is_an_input_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    make_checkpoint(out / "full_sft_64.pth")
    data = write_jsonl(tmp_path / "q.jsonl", [qa("Which instrument has 88 keys?", "The piano.", answers=["piano"])])
    before = data.read_text()
    code, _, err = run_main(mp.main, ["--model", "full_sft", "--out_dir", str(out), "--data", str(data),
                                      "-o", str(data)], capsys)
    assert code == 2 and "is also an input (--data" in err and data.read_text() == before
    code, _, err = run_main(mp.main, ["--model", "nope", "--out_dir", str(out), "--data", str(data)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_the_samples_of_one_question_differ(tmp_path):
    """Each of a question's n answers has its own seed: n samples, not one answer n times."""
    from evaluation.pairs import sample_answers
    from inference.load import load_for_inference
    loaded = load_for_inference(ckpt=make_checkpoint(tmp_path / "m.pth", std=0.08))
    got = sample_answers(loaded, [[{"role": "user", "content": "Which instrument has 88 keys?"}]], 4,
                         {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 6}, seed=0)
    assert len(got) == 1 and len(set(got[0])) == 4, got


def test_an_answer_cut_at_max_new_tokens_is_never_chosen():
    from evaluation.pairs import Answer
    rec = qa("Which instrument has 88 keys?", "The piano has 88 keys.", answers=["piano"])
    pair, _ = pair_of(rec, rec["conversations"][:1], [Answer("The piano, which", False), Answer("A drum.")])
    assert pair["chosen"] == "The piano has 88 keys." and pair["chosen_from"] == "reference"


def test_a_finished_failing_answer_is_rejected_before_one_cut_short_and_the_reference_is_checked():
    from evaluation.pairs import Answer
    rec = qa("Which instrument has 88 keys?", "The piano has 88 keys.", answers=["piano"])
    prompt = rec["conversations"][:1]
    pair, why = pair_of(rec, prompt, [Answer("It might be the", False), Answer("A drum.")])
    assert pair["rejected"] == "A drum." and "cut" not in why
    pair, why = pair_of(rec, prompt, [Answer("It might be the", False)])
    assert pair["rejected"] == "It might be the" and why.endswith("rejected one cut short")
    assert pair["rejected_why"].endswith("(cut at --max_new_tokens)")
    wrong = qa("Which instrument has 88 keys?", "A harp.", answers=["piano"])
    assert pair_of(wrong, prompt, ["A drum."]) == (None, "the reference answer fails its own check")
    unscored = qa("Who are you?", "I am TinyMind.", ask="name")                   # no identity to check against
    assert pair_of(unscored, prompt, ["I am Bob."]) == (None, "nothing to check an answer against")
