"""What the three stage entry points share: start-up, loading the checkpoint a stage starts from, the
chat datasets and the checkpoint record. Library module; trainer/train_*.py call it.
"""
from functools import partial

from dataset.lm_dataset import ChatDataset, collate_chat, load_split
from model.checkpoint import file_sha256, load_checkpoint
from model.config import ModelConfig
from model.tokenizer import load_tokenizer_from_state
from trainer.args import find_base, format_config, parse_args, resolve_inputs
from model import paths
from trainer.distributed import cleanup_distributed, seed_everything, setup_distributed
from trainer.loop import train


def start_run(stage, argv, description):
    """Parse the flags, join the torchrun group (if any), print the resolved config, seed.
    -> (cfg, dist, say) where say prints on rank 0 only."""
    cfg = parse_args(stage, argv, description)
    dist = setup_distributed(cfg.device)
    say = print if dist.is_main else (lambda *a, **k: None)
    say("train config:\n" + format_config(cfg))
    seed_everything(cfg.seed)
    return cfg, dist, say


def load_base(cfg, parent):
    """The checkpoint a fine-tuning stage starts from (--base, else out/{parent}_{hidden}.pth): its path,
    the checkpoint dict, and the model config and tokenizer it carries (never taken from flags)."""
    base = find_base(cfg, parent)
    ckpt = load_checkpoint(base)
    return base, ckpt, ModelConfig.from_dict(ckpt["config"]), load_tokenizer_from_state(ckpt["tokenizer"])


def load_chat_sets(cfg, tokenizer, say):
    """Conversation JSONL -> (train ChatDataset, val ChatDataset or None, data path, split info)."""
    data_path, val_path = resolve_inputs(cfg)
    train_recs, val_recs, info = load_split(data_path, val_path, cfg.val_ratio, cfg.seed, "chat", cfg.skip_bad)
    make = partial(ChatDataset, tokenizer=tokenizer, max_seq_len=cfg.max_seq_len, loss_on=cfg.loss_on,
                   system_prompt=cfg.system_prompt)
    train_set = make([r["conversations"] for r in train_recs])
    val_set = make([r["conversations"] for r in val_recs]) if val_recs else None
    say(f"{data_path}: {len(train_set):,} conversations, {train_set.n_truncated} truncated to "
        f"{cfg.max_seq_len} tokens, {train_set.n_no_target} without a target token"
        + (f", {info['n_bad']} bad lines skipped" if info["n_bad"] else ""))
    return train_set, val_set, data_path, info


def chat_collate(cfg, tokenizer):
    """Dynamic padding to the longest sample of each batch (--padding max_length pads to max_seq_len)."""
    return partial(collate_chat, pad_id=tokenizer.pad_id,
                   pad_to=cfg.max_seq_len if cfg.padding == "max_length" else None)


def stage_meta(stage, data_path, info, base=None, base_sha=None):
    """The record every checkpoint of a stage carries (the loop adds step, tokens, losses, config)."""
    if base is not None and base_sha is None:
        base_sha = file_sha256(base)
    return {"stage": stage, "parent": str(base) if base is not None else None, "parent_sha256": base_sha,
            "val_path": info["val_path"], "val_lines": info["val_lines"], "data_path": str(data_path)}


def finish_run(cfg, dist, say, model, train_set, val_set, collate, save_model, path, meta):
    """Train (trainer/loop.py) with logs and states named after the artefact `path`, leave the process
    group, and say where the result is."""
    final = train(cfg, model, train_set, collate, save_model, paths.run_name(path), dist, val_set=val_set,
                  meta=meta)
    cleanup_distributed()
    say(f"saved {final}")
    return final
