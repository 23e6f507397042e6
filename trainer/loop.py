"""The one training loop every stage runs (pretrain, full SFT, LoRA); it knows nothing of which stage.

Library module; trainer/stage.py finish_run calls it with the run context (trainer/context.py):
    from trainer.loop import train
    train(run, model, train_set, collate, val_set=val_set)

Its parts, in the manner of torchtune's recipes: trainer/components.py (schedule, optimizer, mixed
precision, loaders), trainer/step.py (one optimizer step, validation loss), trainer/state.py (the
resumable training state, saved and loaded) and trainer/runlog.py (log lines, jsonl, bar, wandb, PNG).
"""
from torch.nn.parallel import DistributedDataParallel as DDP

import time

from checkpoint import layout
from core.compiling import compile_model
from trainer.components import (count_steps, get_lr, hold_frozen_in, make_loaders, make_optimizer,
                                mixed_precision, remaining_steps, schedule_step, set_lr)
from trainer.distributed import rank0_clock
from trainer.memory import memory_line
from trainer.runlog import RunLog
from trainer.state import TrainState
from trainer.step import TokenObjective, apply_gradients, check_loss


def due(interval, step, total):
    """A periodic evaluation or save at this step (the last step has its own, after the loop)."""
    return interval and step % interval == 0 and step < total


def train(run, model, train_set, collate, val_set=None):
    """Train `model` (weights loaded, requires_grad set on what trains) on train_set; returns the final path.

    run (trainer/context.py) gives the flags (run.cfg), this process (run.dist) and what the run writes:
    run.save_model(model, meta) writes the stage's artefact (a checkpoint or an adapter) and returns its
    path; it is called every --save_interval steps and at the end with the unwrapped module, on rank 0
    only. run.meta (stage, parent, parent_sha256, ...) goes into every save, with step, tokens and the
    train config. Logs and states go under run.name in run.out.
    """
    cfg, dist, dev = run.cfg, run.dist, run.dist.device
    model.to(dev)                                  # float32 master weights; autocast computes in cfg.dtype
    dtype, autocast, scaler = mixed_precision(cfg.dtype, dev)
    hold_frozen_in(model, dtype)                   # a LoRA run's frozen base: in the compute dtype
    model.set_gradient_checkpointing(cfg.gradient_checkpointing)
    sampler, loader, val_loader = make_loaders(train_set, val_set, collate, cfg, dist)
    steps_per_epoch, total, warmup = count_steps(sampler, cfg)
    objective = run.objective or TokenObjective()
    objective.prepare(run, model, train_set, val_set, collate, dtype, autocast)   # before a resume's weights
    if cfg.compile:     # after prepare: a reference it copies (DPO, GRPO) stays eager
        run.say(compile_model(model))
    state = TrainState(layout.state_dir(run.out, run.name), cfg, dict(run.meta or {}), dist, objective).load(model)
    # no buffer holds state (the rotary tables are a cache each process grows to what it has seen): none is broadcast
    ddp_model = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                    broadcast_buffers=False) if dist.enabled else model
    optimizer = make_optimizer(model, cfg, dev)
    state.load_optimizer(optimizer, scaler)
    trainable = [p for p in model.parameters() if p.requires_grad]
    # the first output of the run: every input has been read and checked by now
    header = (f"run {run.name}: {len(train_set):,} training samples, {len(val_set or []):,} validation; "
              f"{steps_per_epoch:,} steps/epoch, {total:,} steps, {dist.world_size} process(es) on {dev}, "
              f"{str(dtype)[6:]}" + (f", resumed at step {state.step}" if state.resumed else "")
              + (memory_line(model, cfg, dtype, autocast, train_set, sampler) if dist.is_main else ""))
    log = RunLog(run.out, run.name, cfg, total, (state.step, state.tokens_seen), dist.is_main,
                 resumed=state.resumed is not None, header=header)
    state.load_rng()   # last, so that nothing above draws from the restored generators
    model.train()
    last_saved, limit_s, start = None, cfg.max_minutes * 60, time.time()
    for epoch, micro in remaining_steps(loader, sampler, state.step, steps_per_epoch, total, cfg.accumulation_steps):
        elapsed = rank0_clock(start, dist) if limit_s else 0.0
        if limit_s and elapsed >= limit_s:
            log.time_limit(state.step, cfg.max_minutes)
            break
        at = schedule_step(state.step, total, elapsed, limit_s)
        lr = set_lr(optimizer, get_lr(at, total, warmup, cfg.learning_rate))
        stats, n_targets, metrics = objective.accumulate(ddp_model, micro, dist, scaler, autocast)
        step_loss = check_loss(stats[0].item(), n_targets, state.step, last_saved)
        apply_gradients(optimizer, scaler, trainable, cfg.grad_clip, n_targets)
        state.step, state.tokens_seen = state.step + 1, state.tokens_seen + int(stats[1].item())
        log.step_done(state.step, epoch, stats[0].item(), n_targets, step_loss, lr, state.tokens_seen, metrics)
        if val_loader is not None and due(cfg.eval_interval, state.step, total):
            log.record_val(state.step, *objective.validate(model, val_loader, dist, autocast, cfg.eval_batches))
        if due(cfg.save_interval, state.step, total):
            last_saved = state.save(model, optimizer, scaler, run.save_model, log.summary())
            log.publish()
    log.close_bar()
    if val_loader is not None:
        log.record_val(state.step, *objective.validate(model, val_loader, dist, autocast, cfg.eval_batches))
    last_saved = state.save(model, optimizer, scaler, run.save_model, log.summary(), final=True)
    log.close()
    return last_saved
