"""The one training loop every stage runs (pretrain, full SFT, LoRA); it knows nothing of which stage.

Library module; the entry points call it:
    from trainer.loop import train
    train(cfg, model, train_set, collate, save_model, run_name, dist, val_set=val_set, meta=meta)

AdamW (fused on CUDA; no decay on norms and biases), linear warmup then cosine decay to 10% of the peak
(Loshchilov & Hutter 2017, SGDR eq. 5), gradient clipping, gradient accumulation with DDP no_sync, loss
normalised by the target-token count of the whole optimizer step (all micro-batches, all ranks), mixed
precision (autocast on CUDA, GradScaler for float16, float32 master weights), validation loss, periodic
saves, exact resume, a tqdm bar, one log-line format, out/logs/{run}.jsonl, a loss-curve PNG and wandb.
"""
import contextlib
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from model.checkpoint import atomic_torch_save, read_pth
from model.errors import UserError
from trainer.args import out_dir
from trainer.distributed import (ResumableSampler, all_gather_objects, all_reduce_sum, barrier, rng_state,
                                 set_rng_state)


def get_lr(step, total, warmup, lr):
    """Linear warmup over `warmup` steps, then cosine from lr down to 0.1 * lr at the last step."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - 1 - warmup))
    return lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def make_optimizer(model, cfg, device):
    """AdamW over the trainable parameters only; weight decay on matrices, none on norms and biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, 0.95), fused=device.type == "cuda")


def format_eta(seconds):
    s = int(seconds)
    return f"{s}s" if s < 60 else f"{s // 60}m" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


def log_line(step, total, loss=None, lr=None, tok_per_s=None, eta=None, val_loss=None):
    """THE log-line format: `step 100/2000 | loss 2.1234 | lr 3.0e-04 | 52,000 tok/s | eta 3m`."""
    parts = [f"step {step}/{total}"]
    parts += [f"loss {loss:.4f}"] if loss is not None else []
    parts += [f"val_loss {val_loss:.4f}"] if val_loss is not None else []
    parts += [f"lr {lr:.1e}"] if lr is not None else []
    parts += [f"{tok_per_s:,.0f} tok/s"] if tok_per_s is not None else []
    parts += [f"eta {format_eta(eta)}"] if eta is not None else []
    return " | ".join(parts)


def plot_curves(jsonl_paths, png_path, labels=None):
    """Train loss (and validation loss, dashed) against step for out/logs/*.jsonl files -> one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, path in enumerate(jsonl_paths):
        rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        name = labels[i] if labels else Path(path).stem
        train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
        val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
        line = ax.plot(*zip(*train), label=f"{name} train")[0] if train else None
        if val:
            ax.plot(*zip(*val), "o--", color=line.get_color() if line else None, label=f"{name} val")
    ax.set(xlabel="step", ylabel="loss")
    ax.grid(alpha=0.3)
    ax.legend()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = png_path.with_name(f".{png_path.name}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png_path)


@torch.no_grad()
def estimate_loss(model, loader, dist, autocast, max_batches=0):
    """Mean validation loss per target token over (at most max_batches of) the loader, all ranks together."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=dist.device)
    for batch in itertools.islice(loader, max_batches or None):
        with autocast:
            res = model(batch["input_ids"].to(dist.device), labels=batch["labels"].to(dist.device),
                        loss_reduction="sum")
        total[0] += res.loss.double()
        total[1] += res.n_targets
    model.train()
    all_reduce_sum(total, dist)
    return (total[0] / total[1].clamp(min=1)).item()


def accumulate_gradients(ddp_model, micro, dist, scaler, autocast=contextlib.nullcontext()):
    """Forward and backward over one optimizer step's micro-batches -> (stats, global target count).

    The loss is normalised by the target count of the whole step (all micro-batches, all ranks), so
    accumulation and DDP give the gradient of one big batch. DDP's all-reduce runs on the last
    micro-batch only (no_sync before). stats = [summed loss, real tokens], summed over ranks. A step with
    no target token anywhere does no forward and leaves the gradients untouched.
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
                                labels=batch["labels"].to(dev, non_blocking=True), loss_reduction="sum")
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


def train(cfg, model, train_set, collate, save_model, run_name, dist, val_set=None, meta=None):
    """Train `model` (weights loaded, requires_grad set on what trains) on train_set; returns the final path.

    save_model(model, meta) writes the stage's artefact (a checkpoint or an adapter) and returns its path;
    it is called every --save_interval steps and at the end with the unwrapped module, on rank 0 only.
    meta (stage, parent, parent_sha256, ...) goes into every save, with step, tokens and the train config.
    """
    dev, main, meta = dist.device, dist.is_main, dict(meta or {})
    out = out_dir(cfg)
    state_dir, log_path = out / "state" / run_name, out / "logs" / f"{run_name}.jsonl"
    model.to(dev)                                  # float32 master weights; autocast computes in cfg.dtype
    dtype = getattr(torch, cfg.dtype) if dev.type == "cuda" else torch.float32
    autocast = torch.autocast("cuda", dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)

    sampler = ResumableSampler(train_set, dist, shuffle=True, seed=cfg.seed)
    # a private generator: starting a loader iterator must not draw from the global RNG (exact resume)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate,
                        num_workers=cfg.num_workers, generator=torch.Generator().manual_seed(cfg.seed),
                        pin_memory=dev.type == "cuda")
    val_loader = None
    if val_set is not None and len(val_set):
        val_loader = DataLoader(val_set, batch_size=cfg.batch_size, collate_fn=collate,
                                sampler=DistributedSampler(val_set, dist.world_size, dist.rank, shuffle=False))
    steps_per_epoch = math.ceil(math.ceil(len(sampler.inner) / cfg.batch_size) / cfg.accumulation_steps)
    total = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_iters if cfg.warmup_iters >= 0 else math.ceil(0.03 * total)

    # resume: trainable weights, optimizer, scaler, step, data position and RNG from the newest state
    step, tokens_seen, resumed = 0, 0, None
    states = sorted(state_dir.glob("step_*.pth"), key=lambda p: int(p.stem.split("_")[1])) if cfg.resume else []
    if states:
        resumed = read_pth(states[-1])
        if resumed.get("parent_sha256") != meta.get("parent_sha256"):
            raise UserError(f"{states[-1]}: this training state was made from another base checkpoint (sha256 "
                            f"{str(resumed.get('parent_sha256'))[:12]}, now {str(meta.get('parent_sha256'))[:12]}); "
                            "drop --resume or use the base it was trained from")
        params = dict(model.named_parameters())
        for name, value in resumed["params"].items():
            if name not in params:
                raise UserError(f"{states[-1]}: parameter {name} does not exist in this model; drop --resume")
            params[name].data.copy_(value)
        step, tokens_seen = resumed["step"], resumed["tokens_seen"]
        then = resumed["train_config"]
        if (then["batch_size"], then["accumulation_steps"], resumed["world_size"]) != \
                (cfg.batch_size, cfg.accumulation_steps, dist.world_size) and main:
            print("warning: batch size, accumulation or process count differ from the interrupted run; "
                  "the data position is approximate")
    elif cfg.resume and main:
        print(f"no training state in {state_dir}; starting from step 0")

    ddp_model = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None) if dist.enabled else model
    optimizer = make_optimizer(model, cfg, dev)
    if resumed:
        optimizer.load_state_dict(resumed["optimizer"])
        scaler.load_state_dict(resumed["scaler"])
    trainable = [p for p in model.parameters() if p.requires_grad]

    wandb = None
    if main:   # the first output of the run: every input has been read and checked by now
        print(f"run {run_name}: {len(train_set):,} training samples, {len(val_set or []):,} validation; "
              f"{steps_per_epoch:,} steps/epoch, {total:,} steps, {dist.world_size} process(es) on {dev}, "
              f"{str(dtype)[6:]}" + (f", resumed at step {step}" if resumed else ""))
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # a new run starts a fresh log; a resumed one keeps the lines up to its step
        old = log_path.read_text(encoding="utf-8").splitlines() if resumed and log_path.exists() else []
        log_path.write_text("".join(f"{s}\n" for s in old if json.loads(s)["step"] <= step), encoding="utf-8")
        if cfg.use_wandb:
            import wandb
            (out / "wandb").mkdir(parents=True, exist_ok=True)
            wandb.init(project=cfg.wandb_project, name=run_name, config=cfg.to_dict(), dir=str(out / "wandb"))
        from tqdm import tqdm
        bar = tqdm(total=total, initial=step, disable=not sys.stderr.isatty(), dynamic_ncols=True, unit="step")
        emit = print if bar.disable else bar.write

    def record(row, line):
        if main:
            emit(line)
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            if wandb:
                wandb.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    last_saved, last_loss, val_loss = None, float("nan"), None

    def evaluate():
        nonlocal val_loss
        if val_loader is not None:
            val_loss = estimate_loss(model, val_loader, dist, autocast, cfg.eval_batches)
            record({"step": step, "val_loss": val_loss}, log_line(step, total, val_loss=val_loss))

    def save(final=False):
        nonlocal last_saved
        info = {**meta, "step": step, "tokens_seen": tokens_seen, "train_config": cfg.to_dict(),
                "final_loss": last_loss, "val_loss": val_loss, "train_time_s": round(time.time() - t0, 1)}
        rngs = all_gather_objects(rng_state(), dist)         # a collective: every rank takes part
        if main:
            last_saved = save_model(model, info)
            if not final:   # a resumable training state; only the newest keep_last stay
                atomic_torch_save({"params": {n: p.detach().cpu() for n, p in model.named_parameters()
                                              if p.requires_grad},
                                   "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "step": step,
                                   "tokens_seen": tokens_seen, "rng": rngs, "world_size": dist.world_size,
                                   "parent_sha256": meta.get("parent_sha256"), "train_config": cfg.to_dict()},
                                  state_dir / f"step_{step}.pth")
                kept = sorted(state_dir.glob("step_*.pth"), key=lambda p: int(p.stem.split("_")[1]))
                for old in kept[:-max(1, cfg.keep_last)]:
                    old.unlink()
        barrier(dist)

    t0 = t_log = time.time()
    if resumed:   # last, so that nothing above draws from the restored generators
        set_rng_state(resumed["rng"][dist.rank] if len(resumed["rng"]) == dist.world_size else resumed["rng"][0])
    model.train()
    start_step, tokens_at_log, window = step, tokens_seen, torch.zeros(2, dtype=torch.float64)
    for epoch in range(step // steps_per_epoch, math.ceil(total / steps_per_epoch)):
        done = step - epoch * steps_per_epoch
        sampler.set_epoch(epoch, skip=done * cfg.accumulation_steps * cfg.batch_size)
        batches = iter(loader)
        for _ in range(done, min(steps_per_epoch, total - epoch * steps_per_epoch)):
            micro = list(itertools.islice(batches, cfg.accumulation_steps))
            lr = get_lr(step, total, warmup, cfg.learning_rate)
            for group in optimizer.param_groups:
                group["lr"] = lr
            stats, n_targets = accumulate_gradients(ddp_model, micro, dist, scaler, autocast)
            step_loss = stats[0].item() / max(n_targets, 1)
            if not math.isfinite(step_loss):
                raise UserError(f"loss became {step_loss} at step {step + 1}; training stopped, the last good "
                                f"checkpoint is {last_saved or 'none (nothing saved yet)'}; lower "
                                "--learning_rate, keep --grad_clip on or use --dtype bfloat16/float32")
            if n_targets > 0:
                if cfg.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += int(stats[1].item())
            window += torch.tensor([stats[0].item(), n_targets], dtype=torch.float64)
            if main:
                bar.update(1)
                rate = (tokens_seen - tokens_at_log) / max(time.time() - t_log, 1e-9)
                bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.1e}", tok_s=f"{rate:,.0f}")
            if step % cfg.log_interval == 0 or step == total:
                now = time.time()
                last_loss = (window[0] / window[1].clamp(min=1)).item()   # mean per token since the last line
                tok_s = (tokens_seen - tokens_at_log) / max(now - t_log, 1e-9)
                eta = (now - t0) / (step - start_step) * (total - step)
                record({"step": step, "epoch": epoch, "loss": last_loss, "lr": lr, "tok_per_s": round(tok_s),
                        "tokens": tokens_seen}, log_line(step, total, last_loss, lr, tok_s, eta))
                t_log, tokens_at_log, window = now, tokens_seen, torch.zeros(2, dtype=torch.float64)
            if cfg.eval_interval and step % cfg.eval_interval == 0 and step < total:
                evaluate()
            if cfg.save_interval and step % cfg.save_interval == 0 and step < total:
                save()
    if main:
        bar.close()
    evaluate()
    save(final=True)
    if main:
        plot_curves([log_path], log_path.with_suffix(".png"))
        if wandb:
            wandb.finish()
    return last_saved
