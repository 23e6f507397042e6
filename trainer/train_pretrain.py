"""Pretrain a TinyMind model from scratch on {"text": ...} JSONL, packed into full max_seq_len windows.

    python trainer/train_pretrain.py                                  # small preset, dataset/pretrain.jsonl
    python trainer/train_pretrain.py --preset tiny --epochs 2 --max_seq_len 256
    torchrun --nproc_per_node 2 trainer/train_pretrain.py

Writes out/pretrain_{hidden}.pth (the start of trainer/train_full_sft.py), out/logs/pretrain_{hidden}.jsonl
and .png, and resumable states in out/state/pretrain_{hidden}/.
"""
import core.openmp  # noqa: F401  (first: OpenMP threads wait passively, set before torch loads)
import os

import torch

from dataset.lm_dataset import PretrainDataset, collate_pretrain, load_split
from checkpoint import layout
from checkpoint.pth import save_checkpoint
from model.config import get_preset
from core.errors import UserError
from core.cli import run_cli
from model.model import TinyMindForCausalLM
from tokenizer.tokenizer import load_default_tokenizer
from trainer.args import resolve_inputs
from trainer.stage import check_window, finish_run, stage_meta, start_run


def check_memory(config):
    """Training keeps 4 float32 copies of every weight (weights, gradients, AdamW's two moments): refuse a
    shape that cannot fit this machine's memory before allocating it (counted on the meta device)."""
    with torch.device("meta"):
        n = TinyMindForCausalLM(config).num_parameters()
    need, have = 16 * n, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        raise UserError(f"--hidden_size {config.hidden_size} --num_hidden_layers {config.num_hidden_layers}: "
                        f"{n / 1e9:.1f}B parameters need about {need / 2**30:.0f} GiB to train, this machine has "
                        f"{have / 2**30:.0f} GiB; choose a smaller model")


def main(argv=None):
    run = start_run("pretrain", argv, __doc__.splitlines()[0])
    cfg, say = run.cfg, run.say
    # read and check every input before anything is written
    tokenizer = load_default_tokenizer(layout.resolve_input(cfg.tokenizer)) if cfg.tokenizer else load_default_tokenizer()
    data_path, val_path = resolve_inputs(cfg)
    train_texts, val_texts, info = load_split(data_path, val_path, cfg.val_ratio, cfg.seed, "text", cfg.skip_bad)
    if info["n_bad"]:
        say(f"skipped {info['n_bad']} bad lines (--skip_bad)")
    train_set = PretrainDataset([r["text"] for r in train_texts], tokenizer, cfg.max_seq_len)
    val_set = PretrainDataset([r["text"] for r in val_texts], tokenizer, cfg.max_seq_len) if val_texts else None
    say(f"{data_path}: {train_set.n_tokens:,} tokens in {len(train_set):,} windows of {cfg.max_seq_len}")

    overrides = {k: getattr(cfg, k) for k in ("hidden_size", "num_hidden_layers") if getattr(cfg, k)}
    if cfg.use_moe:
        overrides["use_moe"] = True
    try:
        config = get_preset(cfg.preset, vocab_size=tokenizer.vocab_size, eos_token_id=tokenizer.eos_id,
                            pad_token_id=tokenizer.pad_id, **overrides)
    except ValueError as e:          # e.g. a --hidden_size whose heads would be odd-sized
        raise UserError(f"--preset {cfg.preset} with --hidden_size {cfg.hidden_size or 'default'} "
                        f"--num_hidden_layers {cfg.num_hidden_layers or 'default'}: {e}") from None
    check_window(cfg, config, f"the {cfg.preset} preset")
    check_memory(config)
    model = TinyMindForCausalLM(config)
    say(f"model: {model.num_parameters() / 1e6:.2f}M parameters, {config.num_hidden_layers} layers, "
        f"hidden {config.hidden_size}{', MoE' if config.use_moe else ''}")

    path = layout.checkpoint_path(cfg.out_dir, "pretrain", config.hidden_size, config.use_moe)

    def save_model(m, meta):
        save_checkpoint(path, {k: v.float() for k, v in m.state_dict().items()}, config, tokenizer, meta)
        return path

    run.writes(path, save_model, stage_meta("pretrain", data_path, info))
    finish_run(run, model, train_set, val_set, collate_pretrain)


if __name__ == "__main__":
    run_cli(main)
