"""The LoRA flags (--lora_rank, --lora_alpha, --lora_dropout, --lora_targets, --use_rslora) applied to a model,
and checked against a base's shape before any work.

    from trainer.lora_flags import apply_lora_flags
    lora_cfg, wrapped = apply_lora_flags(model, cfg)
"""
import torch

from core.errors import UserError
from model.lora import LoRAConfig, LoRAConfigError, apply_lora
from model.model import TinyMindForCausalLM

# the flag of each LoRAConfig field
LORA_FLAGS = {"r": "lora_rank", "alpha": "lora_alpha", "dropout": "lora_dropout", "targets": "lora_targets"}


def apply_lora_flags(model, cfg):
    """apply_lora (model/lora.py) with the flags' LoRA settings -> (LoRAConfig, wrapped module names). A value
    this model cannot take (a rank above a layer's width, an unknown target) is one line naming the flag."""
    lora_cfg = LoRAConfig(r=cfg.lora_rank, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                          targets=cfg.lora_targets, use_rslora=cfg.use_rslora)
    try:
        return lora_cfg, apply_lora(model, lora_cfg)             # freezes everything else
    except LoRAConfigError as e:
        flag = LORA_FLAGS[e.field]
        raise UserError(f"--{flag} {getattr(cfg, flag)}: {e}") from None


def check_lora_flags(cfg, config):
    """The check of apply_lora_flags before any work, on the shape of a base (its ModelConfig) built on the
    meta device: no memory, no weights. scripts/study.py checks every arm's flags this way first."""
    with torch.device("meta"):
        model = TinyMindForCausalLM(config)
    apply_lora_flags(model, cfg)
