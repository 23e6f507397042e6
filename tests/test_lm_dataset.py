"""Tests for dataset/lm_dataset.py: the hold-out split (by unique sample, seeded, unchanged without copies), and
a chat set in which most samples keep no target token refused.

    python -m pytest tests/test_lm_dataset.py -q
"""
import json
import random

import pytest

from core.errors import UserError
from factories import default_tokenizer, write_jsonl
from dataset.lm_dataset import ChatDataset, load_split, split_records
from scripts import prepare_data


def chat(i, **extra):
    return {"conversations": [{"role": "user", "content": f"question {i}"},
                              {"role": "assistant", "content": f"answer {i}"}], **extra}


def sample(rec):
    return json.dumps(rec["conversations"])


def mixed_file(tmp_path):
    """prepare_data mix of a file repeated 3 times and one 2.5 times (the users' identity + task mix)."""
    task = write_jsonl(tmp_path / "task.jsonl", [chat(i, answers=[f"a{i}"]) for i in range(40)])
    ident = write_jsonl(tmp_path / "ident.jsonl", [chat(100 + i) for i in range(12)])
    prepare_data.main(["mix", f"{task}:3", f"{ident}:2.5", "-o", str(tmp_path / "mix.jsonl")])
    return tmp_path / "mix.jsonl"


@pytest.mark.parametrize("seed", range(6))
def test_a_mix_with_repeats_never_has_a_sample_on_both_sides(tmp_path, seed):
    mix = mixed_file(tmp_path)
    train, val, info = load_split(mix, None, 0.1, seed, "chat")
    n = len(train) + len(val)
    assert n == 40 * 3 + 12 * 2 + 6
    assert not {sample(r) for r in train} & {sample(r) for r in val}
    assert abs(len(val) - round(n * 0.1)) <= 6          # about a tenth: 5 of 52 samples, with their copies
    assert load_split(mix, None, 0.1, seed, "chat")[1] == val                     # seeded
    assert len(info["val_lines"]) == len(val)


def test_without_copies_the_split_is_a_seeded_shuffle():
    """The split before samples were grouped (so runs and their resume checks keep their data)."""
    records = [(i + 1, chat(i)) for i in range(57)]
    order = list(range(57))
    random.Random(3).shuffle(order)
    held = sorted(order[:6])                                    # round(57 * 0.1)
    train, val = split_records(records, 0.1, 3)
    assert val == [records[i] for i in held] and train == [r for i, r in enumerate(records) if i not in held]
    assert split_records(records, 0, 3) == (records, [])
    assert split_records(records[:1], 0.5, 3) == (records[:1], [])


def test_one_sample_in_many_copies_is_not_split():
    records = [(i + 1, chat(0, id=i)) for i in range(5)]      # other keys do not make another sample
    assert split_records(records, 0.4, 0) == (records, [])


@pytest.mark.parametrize("n_long,said", [(6, "no conversation keeps a token"),
                                         (4, "4 of 6 conversations keep no token"), (3, None)])
def test_a_set_whose_samples_mostly_keep_no_target_is_refused(n_long, said):
    """A sample whose reply the cut to max_seq_len removes trains nothing; a set of mostly such samples
    would train on a few and, as a validation set of none, log a loss of 0 over no token."""
    tok = default_tokenizer()
    convs = [chat(i)["conversations"] for i in range(6)]
    for c in convs[:n_long]:
        c[0]["content"] = "a long question about music " * 20
    if said is None:
        ds = ChatDataset(convs, tok, max_seq_len=48, system_prompt="Be brief.")
        assert ds.n_no_target == 3 and len(ds) == 6
        return
    with pytest.raises(UserError) as e:
        ChatDataset(convs, tok, max_seq_len=48, system_prompt="Be brief.", where="data.jsonl")
    assert str(e.value) == (f"data.jsonl: {said} to train on after the cut to --max_seq_len 48 (with --loss_on "
                            "assistant, and the --system_prompt); raise --max_seq_len or shorten the system prompt")
