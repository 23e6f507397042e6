"""trainer/train_dpo.py: the pairs it reads (and refuses), what it learns, exact resume, the LoRA reference,
the precomputed reference, and eval_model.py --model_mode 2. CPU, tiny model (parity with TRL:
tests/test_dpo_parity.py).

    pytest tests/test_dpo.py
"""
import json
import random
import shutil

import pytest
import torch

import eval_model
import trainer.train_dpo as td
from checkpoint.pth import load_checkpoint, save_checkpoint
from dataset.preference import PreferenceDataset, collate_pairs, encode_answer
from factories import FAST, REPO, default_tokenizer, make_adapter, make_checkpoint, make_model, randomize_lora_B, run_main, run_python, write_jsonl
from model.lora import LoRAConfig, adapters_disabled, apply_lora
from trainer.preference import Reference, answer_logps

pytestmark = pytest.mark.usefixtures("one_thread")
COLOURS = "red blue green cat dog sun moon tree river stone".split()


def write_pairs(path, n=40, seed=0):
    """n pairs over random prompts, the chosen answer starting "yes", the rejected one "no"; half of the
    lines in MiniMind's shape, half flat."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        q = " ".join(rng.choice(COLOURS) for _ in range(4))
        good, bad = (f"{w} " + " ".join(rng.choice(COLOURS) for _ in range(3)) for w in ("yes", "no"))
        rows.append({"prompt": q, "chosen": good, "rejected": bad} if i % 2 else
                    {"chosen": [{"role": "user", "content": q}, {"role": "assistant", "content": good}],
                     "rejected": [{"role": "user", "content": q}, {"role": "assistant", "content": bad}]})
    return write_jsonl(path, rows)


def log_rows(out, run):
    return [json.loads(x) for x in (out / "logs" / f"{run}.jsonl").read_text().splitlines()][1:]


def test_an_answers_labels_are_its_tokens_and_end_token_only():
    tok = default_tokenizer()
    prompt = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "earlier reply"},
              {"role": "user", "content": "second question"}]
    ids, labels, cut = encode_answer(tok, prompt, "the answer", 512)
    trained = [t for t, lab in zip(ids, labels) if lab != -100]
    assert not cut and trained == tok.encode("the answer") + tok.encode_special(tok.chat_template.end)
    first = next(i for i, lab in enumerate(labels) if lab != -100)
    start = tok.decode(ids[:first])
    assert "earlier reply" in start and "second question" in start       # an earlier reply trains nothing


def write_random_pairs(path, n=32, seed=0):
    """Pairs whose chosen and rejected answers are random words: nothing to generalise, each pair's
    preference must be learned for itself (no first token that wins every pair at once)."""
    rng = random.Random(seed)
    said = lambda: " ".join(rng.choice(COLOURS) for _ in range(4))     # noqa: E731
    return write_jsonl(path, [{"prompt": said(), "chosen": said(), "rejected": said()} for _ in range(n)])


def test_reward_accuracy_on_the_training_pairs_rises_from_chance_above_90_percent(tmp_path, capsys):
    base = make_checkpoint(tmp_path / "base.pth")
    data = write_random_pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / "out"
    # validation on the training file itself: the reward accuracy over all the training pairs
    code, stdout, err = run_main(td.main, ["--base", str(base), "--data_path", str(data), "--val_data", str(data),
                                           "--out_dir", str(out), *FAST, "--batch_size", "8", "--max_steps", "40",
                                           "--learning_rate", "3e-3", "--eval_interval", "2"], capsys)
    assert code == 0, err
    rows = log_rows(out, "dpo_64")
    train = [r for r in rows if "accuracy" in r]
    # step 1 scores the starting model, equal to its reference (every reward 0: no pair counted right)
    assert train[0]["accuracy"] == 0 and train[0]["margin"] == 0
    val = [r["val_accuracy"] for r in rows if "val_accuracy" in r]
    assert val[0] <= 0.7 and val[-1] >= 0.9, val
    for key in ("loss", "reward_chosen", "reward_rejected", "margin", "logps_chosen", "logps_rejected", "lr"):
        assert key in train[-1], key
    assert "acc " in stdout and "val_acc " in stdout
    ckpt = load_checkpoint(out / "dpo_64.pth")
    assert ckpt["meta"]["stage"] == "dpo" and ckpt["meta"]["preference"]["beta"] == 0.1
    assert ckpt["meta"]["preference"]["loss_type"] == "sigmoid" and ckpt["meta"]["data_path"] == str(data.resolve())


@pytest.mark.parametrize("lora, precompute", [(False, False), (False, True), ("new", True), ("continued", False)])
def test_resume_equals_uninterrupted(tmp_path, lora, precompute):
    """The reference of a resumed run is still the model as it started (not the resumed weights: a full
    run's copy, a continued adapter's starting weights swapped in and out each step); with
    --precompute_ref the resumed run reads the table the interrupted one kept."""
    base = make_checkpoint(tmp_path / "base.pth", dropout=0.1)
    data = write_pairs(tmp_path / "pairs.jsonl", n=30)
    a, b = tmp_path / "a", tmp_path / "b"
    extra = ["--lora_name", "d", "--lora_dropout", "0.1"] if lora == "new" else []
    if lora == "continued":
        start = tmp_path / "start.pth"
        make_adapter(start, base, lora=LoRAConfig(r=4, dropout=0.1))
        extra = ["--from_lora", str(start), "--lora_name", "d"]
    args = ["--base", str(base), "--data_path", str(data), *FAST, "--batch_size", "2", "--accumulation_steps", "2",
            "--max_steps", "10", "--save_interval", "4", "--learning_rate", "1e-3",
            *(["--precompute_ref"] * precompute), *extra]
    td.main(args + ["--out_dir", str(a)])
    run = "d_64" if lora else "dpo_64"
    (b / "state" / run).mkdir(parents=True)
    for name in ("step_4.pth", "reference_logps.pth")[:1 + precompute]:
        shutil.copy(a / "state" / run / name, b / "state" / run / name)
    td.main(args + ["--out_dir", str(b), "--resume"])
    steps = [r["step"] for r in log_rows(b, run) if "accuracy" in r]
    assert min(steps) == 5 and max(steps) == 10
    if lora:
        wa, wb = (torch.load(o / "lora" / "d_64.pth", weights_only=True)["lora"] for o in (a, b))
    else:
        wa, wb = (load_checkpoint(o / "dpo_64.pth")["model"] for o in (a, b))
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=1e-6, msg=k)


def test_the_lora_reference_is_the_base_with_no_second_copy():
    tok = default_tokenizer()
    base = make_model(vocab_size=tok.vocab_size, std=0.08)
    pairs = [{"prompt": [{"role": "user", "content": "a b c"}], "chosen": "yes red", "rejected": "no blue"}]
    batch = collate_pairs([PreferenceDataset(pairs, tok, 64)[0]], pad_id=tok.pad_id)
    with torch.no_grad():
        want = answer_logps(base, batch["input_ids"], batch["labels"])[0]
    model = make_model(vocab_size=tok.vocab_size, std=0.08)
    apply_lora(model, LoRAConfig(r=4))
    randomize_lora_B(model)
    with torch.no_grad():
        adapted = answer_logps(model, batch["input_ids"], batch["labels"])[0]
        with adapters_disabled(model):
            off = answer_logps(model, batch["input_ids"], batch["labels"])[0]
    assert not torch.allclose(adapted, want)
    torch.testing.assert_close(off, want)
    ref = Reference(model.train(), "adapter_off", dtype=torch.float32, precompute=False)
    assert ref.model is None                                          # no copy of the weights
    c, r = ref.logps(model, batch, torch.autocast("cpu", enabled=False))
    torch.testing.assert_close(torch.cat([c, r]), want)
    assert model.training                                             # left as it was
    with torch.no_grad():                                             # and the adapter is on again
        torch.testing.assert_close(answer_logps(model, batch["input_ids"], batch["labels"])[0], adapted)
    # a continued adapter: its reference is its starting weights, swapped in for the reference's forward
    # and out again, whatever the policy has learned since
    ref = Reference(model, "adapter_start", dtype=torch.float32, precompute=False)
    randomize_lora_B(model, seed=5)
    learned = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    c, r = ref.logps(model, batch, torch.autocast("cpu", enabled=False))
    torch.testing.assert_close(torch.cat([c, r]), adapted)
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, learned[n]), n


def test_precomputed_reference_trains_as_the_live_one(tmp_path, capsys):
    base = make_checkpoint(tmp_path / "base.pth")
    data = write_pairs(tmp_path / "pairs.jsonl", n=16)
    args = ["--base", str(base), "--data_path", str(data), *FAST, "--max_steps", "6", "--learning_rate", "1e-3",
            "--val_ratio", "0.3"]
    for name, extra in (("live", []), ("pre", ["--precompute_ref"])):
        assert run_main(td.main, args + ["--out_dir", str(tmp_path / name), *extra], capsys)[0] == 0
    wa, wb = (load_checkpoint(tmp_path / n / "dpo_64.pth")["model"] for n in ("live", "pre"))
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=1e-6, msg=k)
    # the validation pairs have their own table: the same validation as against the live reference
    live, pre = ([r for r in log_rows(tmp_path / n, "dpo_64") if "val_loss" in r] for n in ("live", "pre"))
    assert len(live) == len(pre) > 1
    for a, b in zip(live, pre):
        for key in ("val_loss", "val_margin", "val_accuracy", "val_reward_chosen"):
            assert b[key] == pytest.approx(a[key], abs=1e-5), key
    # a second run over the same pairs and reference reads the table back instead of computing it
    code, stdout, _ = run_main(td.main, args + ["--out_dir", str(tmp_path / "pre"), "--precompute_ref"], capsys)
    assert code == 0 and "computed before" in stdout


def test_model_mode_2_loads_the_dpo_checkpoint_and_a_missing_mode_names_its_maker(tmp_path, capsys):
    out = tmp_path / "out"
    make_checkpoint(out / "dpo_64.pth", stage="dpo")
    code, stdout, err = run_main(eval_model.main, ["--out_dir", str(out), "--model_mode", "2", "--prompt", "hi",
                                                   "--max_new_tokens", "2"], capsys)
    assert code == 0 and "dpo_64.pth" in err, err
    shutil.move(out / "dpo_64.pth", out / "rlhf_64.pth")              # MiniMind's older name of the same stage
    code, stdout, err = run_main(eval_model.main, ["--out_dir", str(out), "--model_mode", "2", "--prompt", "hi",
                                                   "--max_new_tokens", "2"], capsys)
    assert code == 0 and "rlhf_64.pth" in err, err
    code, _, err = run_main(eval_model.main, ["--out_dir", str(tmp_path / "empty"), "--model_mode", "2"], capsys)
    line, = err.strip().splitlines()
    assert code == 2 and "dpo_512.pth" in line and "python trainer/train_dpo.py" in line
    code, _, err = run_main(eval_model.main, ["--out_dir", str(out), "--model_mode", "5"], capsys)
    line, = err.strip().splitlines()
    assert code == 2 and "grpo_512.pth" in line


P = "the question"
BAD = [
    ("not json", "{nope", "malformed JSON"),
    ("no rejected", {"prompt": P, "chosen": "a"}, "missing 'rejected'"),
    ("empty answer", {"prompt": P, "chosen": " ", "rejected": "b"}, "the chosen answer is empty"),
    ("same answers", {"prompt": P, "chosen": "same", "rejected": "same"}, "the same text"),
    ("answer not text", {"prompt": P, "chosen": 3, "rejected": "b"}, "'chosen' is int"),
    ("user reply", {"prompt": P, "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}, "one assistant reply"),
    ("prompt ends with a reply", {"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                                  "chosen": "a", "rejected": "b"}, "does not end with a user turn"),
    ("two prompts", {"chosen": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a"}],
                     "rejected": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "b"}]},
     "do not share the same prompt"),
    ("no answer at the end", {"chosen": [{"role": "user", "content": "q"}],
                              "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]},
     "does not end with an assistant reply"),
]


@pytest.mark.parametrize("name, line, says", BAD, ids=[b[0] for b in BAD])
def test_a_bad_pair_is_one_line_naming_file_and_line_and_nothing_is_written(tmp_path, capsys, name, line, says):
    base = make_checkpoint(tmp_path / "base.pth")
    data = tmp_path / "pairs.jsonl"
    good = {"prompt": "q", "chosen": "a", "rejected": "b"}
    data.write_text("\n".join([json.dumps(good), line if isinstance(line, str) else json.dumps(line)]) + "\n")
    out = tmp_path / "out"
    code, _, err = run_main(td.main, ["--base", str(base), "--data_path", str(data), "--out_dir", str(out), *FAST],
                            capsys)
    msg, = err.strip().splitlines()
    assert code == 2 and f"{data}:2" in msg and says in msg, msg
    assert not any(p.is_file() for p in out.rglob("*")), list(out.rglob("*"))


def test_bad_flags_are_one_line(tmp_path, capsys):
    base = make_checkpoint(tmp_path / "base.pth")
    data = write_pairs(tmp_path / "pairs.jsonl", n=4)
    for flags, says in [(["--loss_type", "ipo", "--label_smoothing", "0.1"], "IPO has none"),
                        (["--label_smoothing", "0.5"], "--label_smoothing must be in [0, 0.5)"),
                        (["--beta", "-1"], "--beta"), (["--lora_name", "../x"], "--lora_name")]:
        code, _, err = run_main(td.main, ["--base", str(base), "--data_path", str(data), "--out_dir",
                                          str(tmp_path / "out"), *FAST, *flags], capsys)
        assert code == 2 and says in err.strip().splitlines()[-1], err


def test_two_gloo_processes_train_as_one_with_the_same_global_batch(tmp_path):
    """torchrun 2 x batch 2 == one process with batch 2 x accumulation 2: the loss is a mean over the
    step's pairs on all ranks (the RPO term over all ranks' chosen tokens), and the precomputed reference
    is each rank's share, summed."""
    base = make_checkpoint(tmp_path / "base.pth")
    data = write_random_pairs(tmp_path / "pairs.jsonl", n=16)
    args = [str(REPO / "trainer" / "train_dpo.py"), "--base", str(base), "--data_path", str(data), "--val_ratio", "0",
            "--max_steps", "4", *FAST, "--batch_size", "2", "--learning_rate", "1e-3", "--rpo_alpha", "0.5",
            "--precompute_ref"]
    run_python(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args,
                "--out_dir", str(tmp_path / "ddp")], REPO)
    run_python([*args, "--accumulation_steps", "2", "--out_dir", str(tmp_path / "one")], REPO)
    wa, wb = (load_checkpoint(tmp_path / n / "dpo_64.pth")["model"] for n in ("ddp", "one"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5, msg=k)
    ta, tb = (torch.load(tmp_path / n / "state" / "dpo_64" / "reference_logps.pth", weights_only=True)["table"]["train"]
              for n in ("ddp", "one"))
    torch.testing.assert_close(ta, tb)


def test_a_continued_adapter_starts_as_its_own_reference_and_records_where_it_came_from(tmp_path, capsys):
    base = make_checkpoint(tmp_path / "base.pth")
    start = tmp_path / "lora_start_64.pth"
    make_adapter(start, base, lora=LoRAConfig(r=4))
    data = write_random_pairs(tmp_path / "pairs.jsonl", n=16)
    out = tmp_path / "out"
    code, stdout, err = run_main(td.main, ["--from_lora", str(start), "--lora_name", "more", "--data_path", str(data),
                                           "--val_ratio", "0", "--out_dir", str(out), *FAST, "--max_steps", "6",
                                           "--learning_rate", "1e-2"], capsys)
    assert code == 0, err
    first = next(r for r in log_rows(out, "more_64") if "accuracy" in r)
    assert first["margin"] == 0 and first["reward_chosen"] == 0          # its reference is itself at the start
    # and stays the start as the adapter learns (a reference that moved with it would keep every reward 0)
    assert all(r["reward_chosen"] != 0 for r in log_rows(out, "more_64")[1:] if "accuracy" in r)
    saved = torch.load(out / "lora" / "more_64.pth", weights_only=True)
    begun = torch.load(start, weights_only=True)
    assert saved["lora_config"] == begun["lora_config"] and saved["meta"]["from_lora"] == str(start)
    assert any(not torch.equal(saved["lora"][k], begun["lora"][k]) for k in begun["lora"])
    assert saved["base"]["sha256"] == begun["base"]["sha256"]
    code, _, err = run_main(td.main, ["--from_lora", str(start), "--data_path", str(data), "--out_dir", str(out)], capsys)
    assert code == 2 and "give --lora_name" in err


def test_the_speed_benchmark_prints_its_table_beside_trl(tmp_path):
    pytest.importorskip("trl")
    base = make_checkpoint(tmp_path / "base.pth")
    data = write_random_pairs(tmp_path / "pairs.jsonl", n=8)
    r = run_python([str(REPO / "scripts" / "bench_dpo.py"), "--ckpt", str(base), "--data", str(data), "--steps", "1",
                    "--batch_size", "2", "--threads", "1", "--lora"], REPO)
    rows = [line for line in r.stdout.splitlines() if line.startswith("| T")]
    assert [row.split("|")[1].strip() for row in rows] == ["TRL 1.16 DPOTrainer", "TinyMind train_dpo"], r.stdout
    assert "command: python" in r.stdout and "machine:" in r.stdout
