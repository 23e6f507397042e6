"""trainer/train_grpo.py: a toy reward rises, exact resume (also inside a --num_iterations window), --beta 0
holds no reference, a group shares one prefill, a reward that raises or returns NaN stops the run with one
line and nothing saved over the last good state, the rewards themselves, the arithmetic task's split, and
eval_model.py --model_mode 5. CPU, tiny model (parity with TRL: tests/test_grpo_parity.py).

    pytest tests/test_grpo.py
"""
import json
import shutil

import pytest
import torch

import eval_model
import trainer.train_grpo as tg
from checkpoint.pth import file_sha256
from dataset.arithmetic import make_problems, split_of
from factories import default_tokenizer, make_checkpoint, make_model, run_main, write_jsonl
from rewards.functions import RewardSet, arithmetic, identity, length, think_format
from trainer.grpo import PolicyLoss
from trainer.grpo_objective import GRPOObjective, Settings
from trainer.rollout import sample_groups

pytestmark = pytest.mark.usefixtures("one_thread")

TOY = '''
import os
def ascii_share(completions, records):
    """The toy reward: the share of a completion's characters that are ASCII letters."""
    if os.environ.get("TOY_REWARD") == "nan":
        return [float("nan")] * len(completions)
    if os.environ.get("TOY_REWARD") == "raise":
        raise RuntimeError("the judge is down")
    return [sum(ch.isascii() and ch.isalpha() for ch in c) / max(1, len(c)) for c in completions]
'''


@pytest.fixture
def toy(tmp_path):
    """(base checkpoint, prompts file, the --reward spec of the toy reward)."""
    (tmp_path / "toy_rewards.py").write_text(TOY)
    base = make_checkpoint(tmp_path / "base.pth", std=0.02)
    data = write_jsonl(tmp_path / "p.jsonl", [{"conversations": [{"role": "user", "content": f"tell me {i}"}]}
                                              for i in range(64)])
    return base, data, f"{tmp_path / 'toy_rewards.py'}:ascii_share"


def args(toy, out, *extra):
    base, data, reward = toy
    return ["--base", str(base), "--data_path", str(data), "--reward", reward, "--max_new_tokens", "8",
            "--out_dir", str(out), "--val_ratio", "0", "--log_interval", "1", "--device", "cpu", "--dtype",
            "float32", *extra]


def rows(out, run="grpo_64"):
    return [json.loads(x) for x in (out / "logs" / f"{run}.jsonl").read_text().splitlines()]


def test_a_toy_reward_rises_in_a_few_dozen_steps(toy, tmp_path, capsys):
    code, _, err = run_main(tg.main, args(toy, tmp_path / "out", "--max_steps", "40", "--learning_rate", "1e-2",
                                          "--beta", "0"), capsys)
    assert code == 0, err
    rewards = [r["reward"] for r in rows(tmp_path / "out") if "reward" in r]
    assert len(rewards) == 40
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert first < 0.3 and last > first + 0.3, rewards          # measured: about 0.17 -> 0.87
    row = next(r for r in rows(tmp_path / "out") if "reward" in r)
    for key in ("reward_std", "zero_std_share", "clip_ratio", "completion_length", "rollout_s", "update_s",
                f"reward_{toy[2]}"):
        assert key in row, key
    assert (tmp_path / "out" / "grpo_64.pth").is_file()


@pytest.mark.parametrize("extra", [["--lora_name", "g", "--beta", "0.04"], ["--num_iterations", "2", "--beta", "0"]])
def test_resume_equals_uninterrupted(toy, tmp_path, capsys, extra):
    """Stopped at step 3 (inside a --num_iterations 2 window: the rollout in use comes from the state)."""
    common = args(toy, tmp_path, "--max_steps", "6", "--save_interval", "3", "--learning_rate", "3e-3",
                  "--batch_size", "2", "--accumulation_steps", "2", *extra)
    a, b = tmp_path / "a", tmp_path / "b"
    run = "g_64" if "--lora_name" in extra else "grpo_64"
    assert run_main(tg.main, common + ["--out_dir", str(a)], capsys)[0] == 0
    (b / "state" / run).mkdir(parents=True)
    shutil.copy(a / "state" / run / "step_3.pth", b / "state" / run / "step_3.pth")
    code, _, err = run_main(tg.main, common + ["--out_dir", str(b), "--resume"], capsys)
    assert code == 0, err
    assert min(r["step"] for r in rows(b, run)[1:]) == 4
    ra = [r["reward"] for r in rows(a, run) if "reward" in r][3:]
    rb = [r["reward"] for r in rows(b, run) if "reward" in r]
    assert ra == pytest.approx(rb, abs=1e-9)
    key = "lora" if run == "g_64" else "model"
    path = (lambda o: o / "lora" / "g_64.pth") if run == "g_64" else (lambda o: o / "grpo_64.pth")
    wa, wb = (torch.load(path(o), weights_only=True)[key] for o in (a, b))
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=1e-6, msg=k)


def objective(beta, kind="copy"):
    return GRPOObjective(None, Settings(reference_kind=kind), PolicyLoss(beta=beta), default_tokenizer())


def test_beta_0_holds_no_reference():
    model = make_model()
    run = type("R", (), {})()
    o = objective(0.0)
    o.prepare(run, model, None, None, None, torch.float32, None)
    assert o.reference is None
    o = objective(0.04)
    o.prepare(run, model, None, None, None, torch.float32, None)
    assert o.reference is not None and o.reference.model is not None         # full fine-tuning: a frozen copy


def test_a_group_shares_one_prefill():
    tok = default_tokenizer()
    model = make_model(std=0.08)
    calls = []
    hook = model.register_forward_pre_hook(lambda m, a, k: calls.append(tuple((a[0] if a else k["input_ids"]).shape)),
                                           with_kwargs=True)
    prompts = [tok.encode("hello there")[:4], tok.encode("a b c d e f")[:6], tok.encode("x y")[:2]]
    groups = sample_groups(model, prompts, 8, 5, 1.0, (), tok.pad_id, list(range(24)))
    hook.remove()
    assert calls[0] == (3, 6)                       # one prefill row per prompt, not per completion
    assert all(c == (24, 1) for c in calls[1:])     # then every completion decodes in one forward a step
    assert len(groups.completion_ids) == 24 and len({tuple(c) for c in groups.completion_ids}) > 3
    assert groups.prompt_ids[:8] == [prompts[0]] * 8


@pytest.mark.parametrize("mode, said", [("raise", "raised RuntimeError: the judge is down"), ("nan", "returned nan")])
def test_a_broken_reward_is_one_line_and_the_last_good_state_stays(toy, tmp_path, capsys, monkeypatch, mode, said):
    out = tmp_path / "out"
    common = args(toy, out, "--save_interval", "2", "--learning_rate", "1e-3")
    assert run_main(tg.main, common + ["--max_steps", "4"], capsys)[0] == 0
    before = {p.name: file_sha256(p) for p in [out / "grpo_64.pth", *(out / "state" / "grpo_64").glob("*.pth")]}
    monkeypatch.setenv("TOY_REWARD", mode)
    code, _, err = run_main(tg.main, common + ["--max_steps", "8", "--resume"], capsys)
    line, = err.strip().splitlines()
    assert code == 2 and said in line and "ascii_share" in line, err
    after = {p.name: file_sha256(p) for p in [out / "grpo_64.pth", *(out / "state" / "grpo_64").glob("*.pth")]}
    assert after == before


def test_bad_flags_and_data_are_one_line(toy, tmp_path, capsys):
    base, data, reward = toy
    out = tmp_path / "out"
    cases = [(["--loss_type", "sigmoid"], "not a grpo loss"), (["--reward", "nosuch"], "--reward nosuch"),
             (["--reward", "nosuch_module:f"], "cannot import"), (["--num_generations", "1"], "--num_generations"),
             (["--reward", "arithmetic"], f"{data}:1: field 'answers' missing")]
    for extra, said in cases:
        code, _, err = run_main(tg.main, args(toy, out, *extra), capsys)
        line, = err.strip().splitlines()
        assert code == 2 and said in line, (extra, err)
    assert not out.exists() or not any(out.rglob("*.pth"))


def test_the_rewards():
    rec = {"answers": ["12"], "operands": [7, 5]}
    answers = ["7 + 5 = 12", "12 or 13", "The answer is 12.", "<think>7 and 5 make 12</think> 12", "13", "",
               "1,2", "The answer is 12.5"]
    assert arithmetic(answers, [rec] * len(answers)) == [1, 0, 1, 1, 0, 0, 0, 0]
    assert think_format(["<think>a</think> b", "<think>a</think>", "a</think> b", "plain"], [{}] * 4) == [1, 0, 0, 1]
    recs = [{"_max_tokens": 64, "_tokens": n, "_finished": f} for n, f in ((10, True), (56, True), (64, False))]
    assert length(["x"] * 3, recs) == [0.0, -0.5, -1.0]
    who = {"identity": {"name": "TinyMind", "creator": "the TinyMind team"}, "ask": "name"}
    assert identity(["I am TinyMind.", "I am ChatGPT."], [who, who]) == [1, 0]
    total, each = RewardSet.parse(["arithmetic", "format:0.5"])(["12", "<think>x"], [rec, rec])
    assert total.tolist() == [1.5, 0.0] and each["format"].tolist() == [1.0, 0.0]


def test_the_arithmetic_split_is_by_question():
    train, test = make_problems(500, (2, 3), "train", seed=1), make_problems(60, (2, 3), "test", seed=2)
    asked = lambda rs: {r["conversations"][0]["content"] for r in rs}      # noqa: E731
    assert not asked(train) & asked(test) and len(asked(train)) == 500
    assert all(split_of(q) == "test" for q in asked(test))
    assert make_problems(50, (2,), "train", seed=3) == make_problems(50, (2,), "train", seed=3)
    for r in train[:50]:
        a, b = r["operands"][:2]
        assert str(eval(r["conversations"][0]["content"].split("is ")[1].split("?")[0].replace("x", "*"))) \
            == r["answers"][0], r


def test_model_mode_5_loads_the_grpo_checkpoint(tmp_path, capsys):
    out = tmp_path / "out"
    make_checkpoint(out / "grpo_64.pth", stage="grpo")
    code, _, err = run_main(eval_model.main, ["--out_dir", str(out), "--model_mode", "5", "--prompt", "hi",
                                              "--max_new_tokens", "2"], capsys)
    assert code == 0 and "grpo_64.pth" in err, err


def test_packed_log_probabilities_equal_padded_rows():
    """The update's packed rows (a group's prompt once) give each completion token the log-probability a
    plain padded forward of prompt + completion gives, at the sampling temperature; gradients flow."""
    import torch.nn.functional as F
    from trainer.rollout import token_logps
    tok = default_tokenizer()
    model = make_model(std=0.08).train()
    prompts = [tok.encode("hello there")[:4], tok.encode("a b c d e f")[:6]]
    groups = sample_groups(model, prompts, 3, 6, 1.0, (), tok.pad_id, list(range(6)))
    got, _ = token_logps(model, groups, temperature=0.7, pad_id=tok.pad_id)
    got.sum().backward()
    assert model.lm_head.weight.grad is not None
    t = groups.tensors(tok.pad_id)
    P = t["input_ids"].shape[1] - t["completion_mask"].shape[1]
    with torch.no_grad():
        logits = model(t["input_ids"], attention_mask=t["attention_mask"]).logits[:, P - 1:-1].float() / 0.7
        want = F.log_softmax(logits, -1).gather(-1, t["input_ids"][:, P:, None]).squeeze(-1) * t["completion_mask"]
    assert got.shape == want.shape
    torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-5)
