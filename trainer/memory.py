"""The memory a training run will need, printed before its first step: weights, gradients, optimizer state
and activations at the batches the run will take (docs/training.md, "Memory").

    from trainer.memory import estimate_memory
    est = estimate_memory(model, dtype, autocast, batch_shapes(train_set, order, cfg))
    print(est.line())

Weights, gradients and AdamW's two moments are counted from the parameters (after a LoRA run's frozen base
is held in the compute dtype). Activations: what autograd keeps for backward, measured once by running
the model's first block on one and on two random rows of the run's length (a saved-tensor hook sums the
storages it keeps that are not parameters, so casts and copies under autocast count), scaled to each
batch's tokens, times the number of blocks (with --gradient_checkpointing: each block's input, plus one
block recomputed); the output layer's logits over the batch's target tokens with their float32 softmax
and its gradient (14 bytes a logit under bfloat16, 16 in float32: measured) at the start of backward, when
all of it is alive at once (with checkpointing the later recompute of one block may be the peak instead).
The peak is the largest batch's; the trainers return freed memory to the system (core/malloc.py), without
which glibc's malloc keeps a quarter more resident. scripts/bench_memory.py checks it against the measured
peak resident memory.
"""
from dataclasses import dataclass

import torch

from model.lora import unwrap_model

GB, MB = 1 << 30, 1 << 20
ADAM_STATES = 2                    # AdamW's exp_avg and exp_avg_sq, float32 like the parameters
HEAD_BYTES = {torch.bfloat16: 14, torch.float16: 14, torch.float32: 16}   # a target's logit, at its peak


def size(n):
    return f"{n / GB:.2f} GB" if n >= GB else f"{n / MB:.0f} MB"


@dataclass
class MemoryEstimate:
    weights: int
    gradients: int
    optimizer: int
    activations: int
    rows: int                     # the peak batch: its rows, padded length and target tokens
    length: int
    targets: int

    @property
    def total(self):
        return self.weights + self.gradients + self.optimizer + self.activations

    def line(self):
        return (f"memory estimate: {size(self.total)} peak = weights {size(self.weights)} + gradients "
                f"{size(self.gradients)} + optimizer {size(self.optimizer)} + activations {size(self.activations)} "
                f"(the largest batch: {self.rows} x {self.length} tokens, {self.targets:,} targets)")


def static_bytes(model):
    """(weights and buffers, gradients, optimizer state) in bytes, each tensor once (tied weights)."""
    tensors = {t.untyped_storage().data_ptr(): t for t in [*model.parameters(), *model.buffers()]}
    weights = sum(t.untyped_storage().nbytes() for t in tensors.values())
    trainable = {p.untyped_storage().data_ptr(): p for p in model.parameters() if p.requires_grad}
    grads = sum(p.numel() * p.element_size() for p in trainable.values())
    return weights, grads, ADAM_STATES * sum(p.numel() * 4 for p in trainable.values())


def block_bytes(model, length, rows, autocast):
    """Bytes autograd keeps for backward in the model's first block at (rows, length), parameters left out."""
    inner = unwrap_model(model)
    block, config = inner.model.layers[0], inner.config
    params = {p.untyped_storage().data_ptr() for p in inner.parameters()}
    kept = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    device = next(inner.parameters()).device
    with torch.random.fork_rng(devices=[]), torch.enable_grad(), autocast, \
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        x = torch.randn(rows, length, config.hidden_size, device=device, requires_grad=True)
        positions = torch.arange(length, device=device).unsqueeze(0).expand(rows, length)
        cos, sin = inner.model.rotary(positions, x.dtype, n=length)
        block.forward(x, cos, sin)              # eager even under --compile: no graph built for the probe
    return sum(kept.values())


class Estimator:
    """The memory of a model as it will train (LoRA applied, frozen base held) at any batch shape up to
    `length` tokens a row: the first block probed once, each shape then costs arithmetic only."""

    def __init__(self, model, dtype, autocast, length):
        inner = unwrap_model(model)
        self.config, self.checkpointing = inner.config, getattr(inner.model, "gradient_checkpointing", False)
        self.static = static_bytes(inner)
        one, two = block_bytes(inner, length, 1, autocast), block_bytes(inner, length, 2, autocast)
        self.per_token, self.fixed = (two - one) / length, 2 * one - two   # a block: weight casts + per token
        self.head = HEAD_BYTES.get(dtype, 16) * self.config.vocab_size
        self.held = torch.empty(0, dtype=dtype).element_size() * self.config.vocab_size  # logits the output keeps

    def activations(self, rows, length, targets):
        c, tokens = self.config, rows * length
        residual = 3 * tokens * c.hidden_size * 4                 # embeddings, final norm, its gradient
        block = self.per_token * tokens + self.fixed
        if not self.checkpointing:
            return int(c.num_hidden_layers * block + residual + self.head * targets)
        # each block's input kept; the peak is the output layer's backward, or later one block recomputed
        inputs = c.num_hidden_layers * tokens * c.hidden_size * 4
        return int(inputs + residual + max(self.head * targets, self.held * targets + block))

    def at(self, shapes):
        """-> MemoryEstimate at the shape of `shapes` ((rows, padded length, target tokens)) needing most."""
        peak = max(shapes, key=lambda s: self.activations(*s))
        return MemoryEstimate(*self.static, self.activations(*peak), *peak)


def estimate_memory(model, dtype, autocast, shapes):
    """-> MemoryEstimate at the batch of `shapes` ((rows, padded length, target tokens) of each batch the
    run takes) that needs the most. The model as it will train (LoRA applied, frozen base held)."""
    return Estimator(model, dtype, autocast, max(length for _, length, _ in shapes)).at(shapes)


def sample_shape(sample, cfg):
    """(rows, length, target tokens) one sample adds to a batch: a chat sample (ids, labels) one row; a
    preference pair (chosen ids, labels, rejected ids, labels) two; an RL prompt (ids) one packed row of
    the prompt and its --num_generations completions of up to --max_new_tokens."""
    if not isinstance(sample, tuple):                      # a prompt's token ids
        completions = cfg.num_generations * cfg.max_new_tokens
        return 1, len(sample) + completions, completions
    rows = [sample[i:i + 2] for i in range(0, len(sample), 2)]
    return (len(rows), max(len(ids) for ids, _ in rows),
            sum(int((labels[1:] != -100).sum()) for _, labels in rows))


def batch_shapes(dataset, indices, cfg):
    """(rows, padded length, target tokens) of each batch of `indices` (a sampler's order), padded to the
    batch's longest sample as the collates pad."""
    if hasattr(dataset, "windows"):                        # pretraining: full windows, every token a target
        n, length = dataset.windows.shape
        rows = min(cfg.batch_size, n)
        return [(rows, length, rows * (length - 1))]
    shapes, indices = [], list(indices)
    for start in range(0, len(indices), cfg.batch_size):
        batch = [sample_shape(dataset.samples[i], cfg) for i in indices[start:start + cfg.batch_size]]
        shapes.append((sum(b[0] for b in batch), max(b[1] for b in batch), sum(b[2] for b in batch)))
    return shapes


def memory_line(model, cfg, dtype, autocast, train_set, sampler):
    """The estimate's line for a run's header ("\n" first), over the first epoch's batches in the sampler's
    order (empty for an empty dataset)."""
    if not (hasattr(train_set, "windows") or hasattr(train_set, "samples")) or not len(train_set):
        return ""
    sampler.set_epoch(0)
    shapes = batch_shapes(train_set, list(sampler), cfg)
    return "\n" + estimate_memory(model, dtype, autocast, shapes).line()
