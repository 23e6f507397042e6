"""GRPO parity with TRL 1.16 (a test dependency only): for the same log-probabilities, old and reference
log-probabilities, advantages and completion masks, every --loss_type's loss and its gradient equal TRL's
GRPOTrainer._compute_loss (run as TRL wrote it, its model forward replaced by the given log-probabilities),
with and without the KL term; and the group advantages equal the ones a real GRPOTrainer step computes from
the same rewards, for each --scale_rewards."""
from types import SimpleNamespace

import pytest
import torch

from trainer.grpo import PolicyLoss, group_advantages

trl = pytest.importorskip("trl")
TOL = dict(rtol=1e-6, atol=1e-6)


def inputs(seed=0, n=6, c=7):
    """Log-probabilities near a policy's (old and reference a little apart, so ratios clip), advantages of
    both signs, and completions of different lengths."""
    g = torch.Generator().manual_seed(seed)
    logps = -torch.rand(n, c, generator=g, dtype=torch.float64) * 3
    old = logps + torch.randn(n, c, generator=g, dtype=torch.float64) * 0.3
    ref = logps + torch.randn(n, c, generator=g, dtype=torch.float64) * 0.5
    adv = torch.randn(n, generator=g, dtype=torch.float64)
    lengths = torch.tensor([7, 3, 5, 1, 6, 4])[:n]
    mask = (torch.arange(c)[None] < lengths[:, None]).long()
    return logps, old, ref, adv, mask


def trl_loss(loss_type, beta, eps, eps_high, logps, old, ref, adv, mask, max_len):
    """TRL's GRPOTrainer._compute_loss on a stand-in trainer whose forward returns the given logps."""
    leaf = logps.clone().requires_grad_(True)
    acc = SimpleNamespace(num_processes=1, gather=lambda x: x, reduce=lambda x, reduction="sum": x,
                          gather_for_metrics=lambda x: x)
    fake = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (leaf, torch.zeros_like(leaf), None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token", beta=beta,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1), loss_type=loss_type,
        epsilon_low=eps, epsilon_high=eps_high, use_vllm=False, vllm_importance_sampling_correction=False,
        model=SimpleNamespace(training=True), current_gradient_accumulation_steps=1, max_completion_length=max_len,
        accelerator=acc, _entropy_bonus_enabled=False, aux_loss_enabled=False,
        _metrics={"train": __import__("collections").defaultdict(list)})
    batch = {"prompt_ids": torch.zeros((len(adv), 2), dtype=torch.long), "prompt_mask": torch.ones((len(adv), 2)),
             "completion_ids": torch.zeros_like(mask), "completion_mask": mask, "advantages": adv,
             "old_per_token_logps": old, "num_items_in_batch": mask.sum()}
    if beta:
        batch["ref_per_token_logps"] = ref
    loss = trl.GRPOTrainer._compute_loss(fake, None, batch)
    loss.backward()
    return loss.detach(), leaf.grad, fake._metrics["train"]


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo", "cispo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_policy_loss_and_gradient_equal_trl(loss_type, beta):
    logps, old, ref, adv, mask = inputs()
    eps, eps_high = 0.2, (5.0 if loss_type == "cispo" else 0.28)
    if loss_type == "cispo":
        old = logps - torch.rand_like(logps) * 3          # ratios up to e^3: some above epsilon_high, clamped
    want, want_grad, metrics = trl_loss(loss_type, beta, eps, eps_high, logps, old, ref, adv, mask, max_len=9)

    loss = PolicyLoss(loss_type, beta, eps, eps_high, max_new_tokens=9)
    leaf = logps.clone().requires_grad_(True)
    per_token, kl, clipped = loss.per_token(leaf, old, adv, ref if beta else None)
    got = loss.aggregate(per_token, mask, n_seqs=len(adv), n_tokens=float(mask.sum()))
    got.backward()
    torch.testing.assert_close(got.detach(), want, **TOL)
    torch.testing.assert_close(leaf.grad, want_grad, **TOL)
    assert want_grad.abs().sum() > 0                           # the comparison has something to compare
    # the logged KL and clip share are TRL's too
    m = mask.double()
    if beta:
        assert abs((kl * m).sum().item() / m.sum().item() - metrics["kl"][-1]) < 1e-6
    key = "cispo_clip_ratio" if loss_type == "cispo" else "clip_ratio/region_mean"
    share = (clipped.double() * m).sum().item() / m.sum().item()
    assert abs(share - metrics[key][-1]) < 1e-6 and (loss_type != "cispo" or share > 0)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_equal_a_real_trl_step(tmp_path, scale):
    """A real GRPOTrainer step on a tiny exported model: its reward function hands out fixed rewards, and
    the advantages the loss receives are TinyMind's for the same rewards (TRL shuffles the rows before the
    loss, so compared as sorted values; the rewards are all different)."""
    transformers = pytest.importorskip("transformers")
    from datasets import Dataset

    from checkpoint.pth import save_checkpoint
    from factories import default_tokenizer, make_model
    from interop.hf import export_hf

    tok = default_tokenizer()
    model = make_model(vocab_size=tok.vocab_size, std=0.08)
    save_checkpoint(tmp_path / "m.pth", model.state_dict(), model.config, tok, {"stage": "full_sft", "step": 0})
    hf_dir = export_hf(tmp_path / "m.pth", tmp_path / "hf")
    rewards = [0.0, 1.0, 0.5, 0.25, 3.0, -1.0, 2.0, 0.75]          # two groups of 4, all values distinct
    seen = []

    def fixed(prompts, completions, **kwargs):
        return rewards[:len(completions)]

    args = trl.GRPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=8, num_generations=4,
                          max_completion_length=3, max_steps=1, scale_rewards=scale, beta=0.0, report_to=[],
                          use_cpu=True, bf16=False, fp16=False, save_strategy="no", logging_steps=1)
    trainer = trl.GRPOTrainer(model=transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32),
                              reward_funcs=fixed, args=args,
                              processing_class=transformers.AutoTokenizer.from_pretrained(hf_dir),
                              train_dataset=Dataset.from_list([{"prompt": [{"role": "user", "content": "a b"}]},
                                                               {"prompt": [{"role": "user", "content": "c d"}]}] * 4))
    original = trainer._compute_loss

    def capture(model_, inputs_):
        seen.append(inputs_["advantages"].detach().clone())
        return original(model_, inputs_)
    trainer._compute_loss = capture
    trainer.train()
    got = torch.cat(seen).double()
    want, _ = group_advantages(torch.tensor(rewards, dtype=torch.float64), 4, scale)
    torch.testing.assert_close(got.sort().values, want.sort().values, rtol=1e-5, atol=1e-5)
