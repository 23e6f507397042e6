"""bfloat16 training on a CPU: float32 master weights and saves, a LoRA run's frozen base held in bfloat16
(trainer.components.hold_frozen_in) with LoRALinear's fused update under autocast, and a loss curve that
follows float32's.

    pytest tests/test_train_precision.py
"""
import copy
import json

import pytest
import torch
import torch.nn as nn

from factories import FAST, make_checkpoint, make_model, randomize_lora_B, write_chat
from model import lora_fused as lora_module
from checkpoint.pth import load_checkpoint
from model.lora import LoRAConfig, LoRALinear, apply_lora
from trainer import train_full_sft, train_lora
from trainer.components import hold_frozen_in

pytestmark = pytest.mark.usefixtures("one_thread")
BF16 = torch.bfloat16


def lora_model(seed=0):
    model = make_model(seed=seed, std=0.05)
    apply_lora(model, LoRAConfig(r=4, alpha=8))
    return randomize_lora_B(model).train()


def test_the_frozen_base_is_held_in_bfloat16_and_what_trains_stays_float32():
    model = lora_model()
    assert hold_frozen_in(model, BF16) == 7 * model.config.num_hidden_layers   # lm_head is tied: not held
    for m in model.modules():
        if isinstance(m, LoRALinear):
            assert m.base.weight.dtype == BF16
            assert m.lora_A.weight.dtype == m.lora_B.weight.dtype == torch.float32
    assert model.model.embed_tokens.weight.dtype == torch.float32 and model.lm_head.weight.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    assert hold_frozen_in(model, torch.float32) == 0
    full = make_model(seed=0)                   # full fine-tuning: nothing is frozen, nothing is held
    assert hold_frozen_in(full, BF16) == 0 and all(p.dtype == torch.float32 for p in full.parameters())


def test_the_held_base_update_is_float32_accurate(monkeypatch):
    """Held base (HeldLoRAFunction: base matmul in bfloat16, the low-rank term and the sum in float32)
    against the float32 model: the same loss and LoRA gradients to bfloat16 precision, on the fused path."""
    calls = []
    real = lora_module.HeldLoRAFunction.apply
    monkeypatch.setattr(lora_module.HeldLoRAFunction, "apply", lambda *a: calls.append(1) or real(*a))
    held, plain = lora_model(), lora_model()
    hold_frozen_in(held, BF16)
    ids = torch.randint(5, 6000, (2, 24), generator=torch.Generator().manual_seed(0))
    losses, grads = [], []
    for model, autocast in ((held, True), (plain, False)):
        with torch.autocast("cpu", dtype=BF16, enabled=autocast):
            loss = model(ids, labels=ids).loss
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad]))
    assert len(calls) == 14                                               # every wrapped layer, fused
    assert grads[0].dtype == torch.float32
    assert abs(losses[0] - losses[1]) < 2e-3 * abs(losses[1])
    assert nn.functional.cosine_similarity(grads[0], grads[1], dim=0).item() > 0.999
    assert abs(grads[0].norm() / grads[1].norm() - 1) < 0.01                # and the same size
    assert torch.allclose(grads[0], grads[1], rtol=0.05, atol=0.02 * grads[1].abs().max().item())


def test_a_small_adapter_update_is_not_rounded_away():
    """A young adapter changes the base output by far less than bfloat16's resolution of it; a sum
    rounded to bfloat16 would drop that change (the slower bfloat16 learning BENCHMARKS.md measured)."""
    torch.manual_seed(0)
    base = nn.Linear(64, 64).requires_grad_(False)               # frozen, as apply_lora leaves it
    layer = LoRALinear(base, r=4, alpha=4)
    nn.init.normal_(layer.lora_B.weight, std=1e-4)              # an update of ~1e-4 of the output's size
    x = torch.randn(32, 64)
    with torch.no_grad():
        want = layer(x) - base(x)                               # float32: the adapter's change
        held = copy.deepcopy(layer)
        held.base.to(BF16)
        with torch.autocast("cpu", dtype=BF16):
            got = held(x).float() - held.base(x.to(BF16)).float()
    assert nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0).item() > 0.99
    rounded = (held.base(x.to(BF16)).float() + want).to(BF16).float() - held.base(x.to(BF16)).float()
    assert nn.functional.cosine_similarity(rounded.flatten(), want.flatten(), dim=0).item() < 0.5


def losses(tmp_path, name, dtype, base, data):
    out = tmp_path / name
    train_lora.main(["--base", str(base), "--data_path", str(data), "--out_dir", str(out), *FAST, "--dtype", dtype,
                     "--max_steps", "12", "--learning_rate", "3e-3", "--val_ratio", "0"])
    rows = [json.loads(s) for s in (out / "logs" / "lora_music_64.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r], out / "lora" / "lora_music_64.pth"


def test_a_bfloat16_lora_run_follows_the_float32_loss_curve_and_saves_float32(tmp_path):
    base = make_checkpoint(tmp_path / "base.pth", std=0.05)
    data = write_chat(tmp_path / "chat.jsonl", n=32)
    ref, _ = losses(tmp_path, "f32", "float32", base, data)
    low, path = losses(tmp_path, "bf16", "bfloat16", base, data)
    assert len(ref) == len(low) == 12 and ref[-1] < ref[0] - 0.1                  # it learns
    worst = max(abs(a - b) / a for a, b in zip(ref, low))
    assert worst < 0.01, (ref, low)                                              # within 1% at every step
    adapter = torch.load(path, weights_only=True)
    assert adapter["meta"]["train_config"]["dtype"] == "bfloat16"
    assert {t.dtype for t in adapter["lora"].values()} == {torch.float32}


def test_a_bfloat16_full_sft_run_saves_float32_weights(tmp_path):
    base = make_checkpoint(tmp_path / "out" / "pretrain_64.pth", stage="pretrain")
    before = copy.deepcopy(load_checkpoint(base)["model"])
    data = write_chat(tmp_path / "chat.jsonl", n=16)
    train_full_sft.main(["--base", str(base), "--data_path", str(data), "--out_dir", str(tmp_path / "out"),
                         "--max_steps", "2", *FAST, "--dtype", "bfloat16"])
    ckpt = load_checkpoint(tmp_path / "out" / "full_sft_64.pth")
    assert ckpt["meta"]["train_config"]["dtype"] == "bfloat16"
    assert {t.dtype for t in ckpt["model"].values()} == {torch.float32}
    assert any(not torch.equal(before[k], v) for k, v in ckpt["model"].items())   # it trained
