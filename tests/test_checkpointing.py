"""--gradient_checkpointing: each block recomputed in backward gives exactly the gradients of keeping its
activations (float32 with dropout, a LoRA over a base held in bfloat16 under autocast, a mixture of
experts, packed rows), and a trainer run with the flag logs the same losses as one without."""

import torch

from factories import losses_with_and_without, make_checkpoint, make_model, write_chat
from model.lora import LoRAConfig, apply_lora
from trainer.components import hold_frozen_in


def grads_of(model, ids, on, autocast=None, packed=None):
    """Every trainable parameter's gradient of one forward/backward, checkpointing on or off."""
    model.train().set_gradient_checkpointing(on)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)                  # the same dropout masks both ways
    ctx = autocast or torch.autocast("cpu", enabled=False)
    with ctx:
        if packed is None:
            loss = model(ids, labels=ids).loss
        else:
            loss = model(ids, packed=packed).logits.float().logsumexp(-1).mean()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}, loss.detach()


def assert_same(model, ids, **kw):
    plain, loss_plain = grads_of(model, ids, False, **kw)
    recomputed, loss_re = grads_of(model, ids, True, **kw)
    assert torch.equal(loss_plain, loss_re)
    assert plain.keys() == recomputed.keys() and plain
    for name in plain:
        assert torch.equal(plain[name], recomputed[name]), name


def ids_for(model, B=3, T=24):
    return torch.randint(0, model.config.vocab_size, (B, T), generator=torch.Generator().manual_seed(0))


def test_full_float32_with_dropout():
    model = make_model(dropout=0.1)
    assert_same(model, ids_for(model))


def test_lora_over_a_bfloat16_base_under_autocast():
    model = make_model()
    apply_lora(model, LoRAConfig(r=4, alpha=8))
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)          # B non-zero: every LoRA gradient is exercised
    assert hold_frozen_in(model, torch.bfloat16) > 0
    assert_same(model, ids_for(model), autocast=torch.autocast("cpu", dtype=torch.bfloat16))


def test_mixture_of_experts():
    model = make_model(use_moe=True)
    assert_same(model, ids_for(model))


def test_packed_rows_as_the_grpo_update_runs_them():
    # one row: a 4-token prompt, then two 4-token completions that each see the prompt and themselves
    model = make_model()
    ids = ids_for(model, B=1, T=12)
    causal = torch.tril(torch.ones(12, 12, dtype=torch.bool))
    mask = causal.clone()
    mask[8:, 4:8] = False
    positions = torch.tensor([list(range(8)) + list(range(4, 8))])
    assert_same(model, ids, packed=(positions, mask[None, None], torch.ones(1, 12, dtype=torch.bool)))


def test_no_recompute_when_decoding_or_without_grad():
    model = make_model().set_gradient_checkpointing(True).train()
    ids = ids_for(model, B=1, T=8)
    with torch.no_grad():
        a = model(ids).logits
    b = model.eval()(ids).logits.detach()
    assert torch.equal(a, b)


def test_trainer_flag_logs_the_same_losses(tmp_path):
    import trainer.train_full_sft as ts
    base = make_checkpoint(tmp_path / "base.pth")
    data = write_chat(tmp_path / "chat.jsonl", n=40)
    runs = losses_with_and_without(ts.main, ["--base", str(base), "--data_path", str(data), "--max_steps", "3",
                                             "--batch_size", "4", "--log_interval", "1", "--dtype", "float32",
                                             "--device", "cpu"], "--gradient_checkpointing", tmp_path, "full_sft_64")
    assert runs[False][1]["gradient_checkpointing"] is False and runs[True][1]["gradient_checkpointing"] is True
    assert runs[True][0] == runs[False][0] and len(runs[True][0]) == 3
