"""The parts trainer/loop.py sets a run up from: learning-rate schedule, optimizer, mixed precision, data
loaders, the step count, and the order in which the remaining steps take their micro-batches.

AdamW (fused on CUDA; no decay on norms and biases), linear warmup then cosine decay to 10% of the peak
(Loshchilov & Hutter 2017, SGDR eq. 5), autocast on CUDA with a GradScaler for float16 over float32
master weights. Library module:
    from trainer.components import get_lr, make_optimizer
    optimizer = make_optimizer(model, cfg, device)
"""
import contextlib
import itertools
import math

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler

from model.lora import unwrap_model
from trainer.distributed import ResumableSampler


def schedule_step(step, total, elapsed_s, limit_s):
    """The step the learning-rate schedule is at: the step, or further on where a time limit (--max_minutes)
    will end the run first, so that a run stopped by its clock has still decayed its learning rate."""
    if limit_s <= 0:
        return step
    return max(step, min(total - 1, int(total * elapsed_s / limit_s)))


def get_lr(step, total, warmup, lr):
    """Linear warmup over `warmup` steps, then cosine from lr down to 0.1 * lr at the last step."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - 1 - warmup))
    return lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def make_optimizer(model, cfg, device):
    """AdamW over the trainable parameters only; weight decay on matrices, none on norms and biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, 0.95), fused=device.type == "cuda")


def mixed_precision(dtype_name, device):
    """-> (compute dtype, autocast context, GradScaler). The weights stay float32; autocast computes in
    dtype_name (on a CPU: bfloat16 when asked, else float32), and float16 needs the scaler against
    underflowing gradients."""
    dtype = getattr(torch, dtype_name) if device.type in ("cuda", "cpu") else torch.float32
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    return dtype, autocast, torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def hold_frozen_in(model, dtype):
    """Hold every frozen nn.Linear (a LoRA run's base: no parameter of it trains) in the compute dtype, in
    place; returns how many. Autocast would cast those weights again on every call; held in bfloat16 they
    are the same values, streamed at half the bytes, and LoRALinear fuses its update into their matmul.
    A weight tied to an embedding stays float32 (the embedding's rows feed the float32 residual stream)."""
    if dtype == torch.float32:
        return 0
    model = unwrap_model(model)
    tied = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    held = 0
    for m in model.modules():
        if isinstance(m, nn.Linear) and id(m.weight) not in tied and \
                not any(p.requires_grad for p in m.parameters()):
            m.to(dtype)
            held += 1
    return held


def make_loaders(train_set, val_set, collate, cfg, dist):
    """-> (resumable sampler, training loader, validation loader or None), each rank reading its share."""
    group = cfg.batch_size if cfg.group_by_length and hasattr(train_set, "samples") else 0
    sampler = ResumableSampler(train_set, dist, shuffle=True, seed=cfg.seed, group=group,
                               repeat=(cfg.num_iterations, cfg.batch_size * cfg.accumulation_steps))
    # a private generator: starting a loader iterator must not draw from the global RNG (exact resume)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate,
                        num_workers=cfg.num_workers, generator=torch.Generator().manual_seed(cfg.seed),
                        pin_memory=dist.device.type == "cuda")
    val_loader = None
    if val_set is not None and len(val_set):
        val_loader = DataLoader(val_set, batch_size=cfg.batch_size, collate_fn=collate,
                                sampler=DistributedSampler(val_set, dist.world_size, dist.rank, shuffle=False))
    return sampler, loader, val_loader


def count_steps(sampler, cfg):
    """-> (optimizer steps per epoch, steps of the run, warmup steps; -1 warmup = 3% of the run)."""
    steps_per_epoch = math.ceil(math.ceil(sampler.total / cfg.batch_size) / cfg.accumulation_steps)
    total = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_iters if cfg.warmup_iters >= 0 else math.ceil(0.03 * total)
    return steps_per_epoch, total, warmup


def remaining_steps(loader, sampler, start, steps_per_epoch, total, accumulation_steps):
    """(epoch, micro-batches) for each optimizer step from `start` to `total`. The epoch a resumed run
    starts in skips the samples the interrupted run had used, so the data order is the uninterrupted one."""
    for epoch in range(start // steps_per_epoch, math.ceil(total / steps_per_epoch)):
        done = max(0, start - epoch * steps_per_epoch)
        sampler.set_epoch(epoch, skip=done * accumulation_steps * loader.batch_size)
        batches = iter(loader)
        for _ in range(done, min(steps_per_epoch, total - epoch * steps_per_epoch)):
            yield epoch, list(itertools.islice(batches, accumulation_steps))
