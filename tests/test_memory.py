"""trainer/memory.py: the memory estimate a run prints before its first step (weights, gradients, AdamW's
state, activations at the largest batch), its parts counted right, and printed by the trainers."""
import pytest
import torch

from factories import make_checkpoint, make_model, write_chat
from model.lora import LoRAConfig, apply_lora
from trainer.components import hold_frozen_in
from trainer.memory import batch_shapes, block_bytes, estimate_memory, static_bytes

NO_AUTOCAST = torch.autocast("cpu", enabled=False)


def test_static_parts_count_each_tensor_once_and_only_what_trains():
    model = make_model()                                   # tied embeddings: counted once
    n = sum(p.numel() for p in model.parameters())         # parameters() yields a tied weight once
    buffers = sum(b.untyped_storage().nbytes() for b in model.buffers())
    weights, grads, optimizer = static_bytes(model)
    assert weights == 4 * n + buffers and grads == 4 * n and optimizer == 2 * 4 * n
    apply_lora(model, LoRAConfig(r=4, alpha=8))
    assert hold_frozen_in(model, torch.bfloat16) > 0
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    weights_held, grads, optimizer = static_bytes(model)
    assert grads == 4 * trainable and optimizer == 8 * trainable and weights_held < weights + 4 * trainable


def test_block_bytes_counts_activations_not_weights():
    model = make_model().train()
    one, two = block_bytes(model, 32, 1, NO_AUTOCAST), block_bytes(model, 32, 2, NO_AUTOCAST)
    assert one > 0 and abs(two - 2 * one) <= 0.01 * two        # float32, no casts: all of it per token
    C, I = model.config.hidden_size, model.config.intermediate_size
    assert one >= 32 * (4 * C + 3 * I) * 4                     # at least the block's linear inputs and the MLP
    bf16 = torch.autocast("cpu", dtype=torch.bfloat16)
    fixed = 2 * block_bytes(model, 32, 1, bf16) - block_bytes(model, 32, 2, bf16)
    weights = sum(p.numel() for n, p in model.model.layers[0].named_parameters() if p.dim() == 2)
    assert abs(fixed - 2 * weights) <= 0.05 * 2 * weights       # autocast's bfloat16 copies of the weights


def test_activations_scale_with_tokens_and_checkpointing_cuts_them():
    model = make_model(num_hidden_layers=6).train()
    est = {}
    for rows in (2, 4):
        for on in (False, True):
            model.set_gradient_checkpointing(on)
            est[rows, on] = estimate_memory(model, torch.float32, NO_AUTOCAST, [(rows, 64, 0)])   # the body only
    assert est[4, False].activations > 1.9 * est[2, False].activations
    assert est[4, True].activations < 0.6 * est[4, False].activations
    assert est[4, True].weights == est[4, False].weights
    model.set_gradient_checkpointing(False)
    worst = estimate_memory(model, torch.float32, NO_AUTOCAST, [(4, 8, 20), (2, 64, 100), (4, 16, 10)])
    assert (worst.rows, worst.length, worst.targets) == (2, 64, 100)
    head = estimate_memory(model, torch.float32, NO_AUTOCAST, [(2, 64, 100)]).activations - \
        estimate_memory(model, torch.float32, NO_AUTOCAST, [(2, 64, 0)]).activations
    assert head == 16 * 100 * model.config.vocab_size


def test_batch_shapes_pad_to_the_longest_and_count_targets(tokenizer, tmp_path):
    import json
    from dataset.lm_dataset import ChatDataset
    path = write_chat(tmp_path / "c.jsonl", n=10)
    ds = ChatDataset([json.loads(line)["conversations"] for line in path.read_text().splitlines()], tokenizer, 256)
    shapes = batch_shapes(ds, range(10), type("C", (), {"batch_size": 4})())
    assert [s[0] for s in shapes] == [4, 4, 2]
    for (rows, length, targets), start in zip(shapes, (0, 4, 8)):
        samples = ds.samples[start:start + 4]
        assert length == max(len(ids) for ids, _ in samples)
        assert targets == sum(int((labels[1:] != -100).sum()) for _, labels in samples)


def test_trainers_print_the_estimate_before_the_first_step(tmp_path, capsys):
    from core.cli import run_cli
    import trainer.train_lora as tl
    base = make_checkpoint(tmp_path / "base.pth")
    data = write_chat(tmp_path / "chat.jsonl", n=20)
    run_cli(tl.main, ["--base", str(base), "--data_path", str(data), "--out_dir", str(tmp_path / "out"),
                      "--max_steps", "1", "--batch_size", "4", "--dtype", "float32", "--device", "cpu",
                      "--lora_name", "m"])
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("memory estimate:"))
    assert out.index("memory estimate:") < out.index("saved ")
    assert "weights" in line and "optimizer" in line and "the largest batch: 4 x" in line


def test_freed_memory_is_returned_unless_the_user_set_the_threshold(monkeypatch):
    import platform
    from core.malloc import return_freed_memory
    if platform.libc_ver()[0] == "glibc":
        assert return_freed_memory() is True
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert return_freed_memory() is False
