"""Self-describing .pth checkpoints, one format for every stage.

A checkpoint is a dict {"format", "model" (state dict), "config" (ModelConfig as a dict), "tokenizer"
(its state, bytes included, so one file is self-contained), "meta" (stage, step, tokens seen, training
config, parent checkpoint path and sha256, creation time)}. Saved atomically, loaded with weights_only.

    from model.checkpoint import load_model
    model, tokenizer, ckpt = load_model("out/full_sft_512.pth")
"""
import hashlib
import pickle
import time
import zipfile
from pathlib import Path

import torch

from .atomic import atomic_path
from .config import ModelConfig
from .errors import UserError

FORMAT = "tinymind-checkpoint-v1"
ADAPTER_FORMAT = "tinymind-lora-v1"


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_torch_save(obj, path):
    """torch.save through model.atomic: a temporary name, fsync, rename; never a half-written file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(path, model_state, config, tokenizer, meta=None):
    """Write a full-model checkpoint. model_state is a state dict (tensors are stored as they are)."""
    meta = dict(meta or {})
    meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S"))
    obj = {"format": FORMAT, "model": {k: v.detach().cpu() for k, v in model_state.items()},
           "config": config.to_dict() if isinstance(config, ModelConfig) else dict(config),
           "tokenizer": tokenizer.to_state() if hasattr(tokenizer, "to_state") else tokenizer,
           "meta": meta}
    atomic_torch_save(obj, path)


def read_pth(path, map_location="cpu"):
    """torch.load(weights_only=True) with one clear line for a missing, corrupt or foreign file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a .pth file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a readable checkpoint (corrupt or truncated? {first[:120]}); "
                        "re-create it or pick another file") from None


def load_checkpoint(path, map_location="cpu"):
    return check_checkpoint(read_pth(path, map_location), path)


def check_checkpoint(obj, path):
    """obj (what read_pth gave for path) if it is a full TinyMind checkpoint, else one clear line."""
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        fmt = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        hint = " (it is a LoRA adapter, not a full checkpoint)" if fmt == ADAPTER_FORMAT else ""
        raise UserError(f"{path}: not a TinyMind checkpoint (format {fmt!r}){hint}")
    for key in ("model", "config", "tokenizer", "meta"):
        if key not in obj:
            raise UserError(f"{path}: checkpoint has no {key!r} entry; re-create it")
    return obj


def build_model(config, state_dict=None, device="cpu", dtype=None, where="checkpoint"):
    """Build the network for config and load state_dict strictly (a mismatch is a clear error)."""
    from .model import TinyMindForCausalLM
    model = TinyMindForCausalLM(config)
    if state_dict is not None:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        # a tied lm_head may be absent from the file
        missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
        if missing or unexpected:
            raise UserError(f"{where}: weights do not match its config (missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]})")
    model.to(device=device, dtype=dtype) if dtype else model.to(device)
    return model


def load_model(path, device="cpu", dtype=None):
    """Checkpoint file -> (model in eval mode, tokenizer, checkpoint dict)."""
    ckpt = load_checkpoint(path)
    return (*model_from_checkpoint(ckpt, device, dtype, where=str(path)), ckpt)


def model_from_checkpoint(ckpt, device="cpu", dtype=None, where="checkpoint"):
    """A checked checkpoint dict -> (model in eval mode, tokenizer)."""
    from .tokenizer import load_tokenizer_from_state
    config = ModelConfig.from_dict(ckpt["config"])
    model = build_model(config, ckpt["model"], device, dtype, where=where).eval()
    return model, load_tokenizer_from_state(ckpt["tokenizer"])
