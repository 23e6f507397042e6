"""One optimizer step of the training loop, and the validation loss: forward and backward over the step's
micro-batches, the loss check, clipping and the update.

The loss is normalised by the target-token count of the whole optimizer step (all micro-batches, all
ranks), so gradient accumulation and DDP give the gradient of one big batch. Library module:
    from trainer.step import accumulate_gradients, apply_gradients, estimate_loss
    stats, n_targets = accumulate_gradients(ddp_model, micro, dist, scaler, autocast)
"""
import contextlib
import itertools
import math

import torch

from core.errors import UserError
from trainer.distributed import all_reduce_sum


@torch.no_grad()
def estimate_loss(model, loader, dist, autocast, max_batches=0):
    """Mean validation loss per target token over (at most max_batches of) the loader, all ranks together."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=dist.device)
    for batch in itertools.islice(loader, max_batches or None):
        with autocast:
            res = model(batch["input_ids"].to(dist.device), labels=batch["labels"].to(dist.device),
                        loss_reduction="sum", targets_only=True)
        total[0] += res.loss.double()
        total[1] += res.n_targets
    model.train()
    all_reduce_sum(total, dist)
    return (total[0] / total[1].clamp(min=1)).item()


def accumulate_gradients(ddp_model, micro, dist, scaler, autocast=contextlib.nullcontext()):
    """Forward and backward over one optimizer step's micro-batches -> (stats, global target count).

    DDP's all-reduce runs on the last micro-batch only (no_sync before). stats = [summed loss, real
    tokens], summed over ranks. A step with no target token anywhere does no forward and leaves the
    gradients untouched.
    """
    dev = dist.device
    n_targets = torch.tensor([sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro)],
                             dtype=torch.float64, device=dev)
    global_targets = all_reduce_sum(n_targets, dist).item()
    stats = torch.zeros(2, dtype=torch.float64, device=dev)
    for i, batch in enumerate(micro if global_targets > 0 else []):
        sync = i == len(micro) - 1 or not dist.enabled
        with contextlib.nullcontext() if sync else ddp_model.no_sync():
            with autocast:
                res = ddp_model(batch["input_ids"].to(dev, non_blocking=True),
                                labels=batch["labels"].to(dev, non_blocking=True), loss_reduction="sum",
                                targets_only=True)
            # DDP averages gradients over ranks, so scale the per-token loss back up by world_size
            loss = res.loss * (dist.world_size / global_targets)
            if res.aux_loss is not None:
                loss = loss + res.aux_loss / len(micro)
            scaler.scale(loss).backward()
        stats[0] += res.loss.detach().double()
    stats[1] = sum(b["attention_mask"].sum().item() if "attention_mask" in b else b["input_ids"].numel()
                   for b in micro)
    all_reduce_sum(stats, dist)
    return stats, global_targets


class TokenObjective:
    """The language-model objective of pretraining, SFT and LoRA: cross-entropy per target token. What
    trainer/loop.py asks of an objective (trainer/preference.py has the other one): prepare, accumulate
    -> (stats, global weight, metric sums) and validate -> (loss, metrics)."""

    def prepare(self, run, model, train_set, val_set, collate, dtype, autocast):
        pass

    def accumulate(self, ddp_model, micro, dist, scaler, autocast):
        stats, n_targets = accumulate_gradients(ddp_model, micro, dist, scaler, autocast)
        return stats, n_targets, {}

    def validate(self, model, loader, dist, autocast, max_batches=0):
        return estimate_loss(model, loader, dist, autocast, max_batches), {}


def check_loss(loss_sum, n_targets, step, last_saved):
    """The step's mean loss per target token; NaN or inf stops the run with one line saying what to do."""
    loss = loss_sum / max(n_targets, 1)
    if not math.isfinite(loss):
        raise UserError(f"loss became {loss} at step {step + 1}; training stopped, the last good "
                        f"checkpoint is {last_saved or 'none (nothing saved yet)'}; lower "
                        "--learning_rate, keep --grad_clip on or use --dtype bfloat16/float32")
    return loss


def apply_gradients(optimizer, scaler, params, grad_clip, n_targets):
    """Clip the global gradient norm of params (the trainable ones, in model order) and update; a step
    without a target token changes nothing. The gradients are cleared either way."""
    if n_targets > 0:
        if grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        scaler.step(optimizer)
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
