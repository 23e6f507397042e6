"""Self-describing .pth checkpoints, one format for every stage.

A checkpoint is a dict {"format", "model" (state dict), "config" (ModelConfig as a dict), "tokenizer"
(its state, bytes included, so one file is self-contained), "meta" (stage, step, tokens seen, training
config, parent checkpoint path and sha256, creation time)}. Saved atomically, loaded with weights_only.

    from checkpoint.pth import load_model
    model, tokenizer, ckpt = load_model("out/full_sft_512.pth")
"""
import hashlib
import math
import pickle
import re
import time
from pathlib import Path
from typing import get_type_hints

import torch

from core.atomic import atomic_path
from model.config import ModelConfig
from core.errors import UserError
from model.model import TinyMindForCausalLM
from tokenizer.tokenizer import load_tokenizer_from_state

FORMAT = "tinymind-checkpoint-v1"
ADAPTER_FORMAT = "tinymind-lora-v1"
# ModelConfig sizes a network cannot be built without (0 means "derive it" for intermediate_size, head_dim)
POSITIVE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                   "max_position_embeddings", "num_experts", "num_experts_per_tok", "rope_theta", "rms_norm_eps")


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_torch_save(obj, path):
    """torch.save through core.atomic: a temporary name, fsync, rename; never a half-written file."""
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


def read_pth(path, map_location="cpu", mmap=False):
    """torch.load(weights_only=True) with one clear line for a missing, corrupt or foreign file. mmap=True
    maps the tensors instead of reading them: for looking at a file's entries without its weights' I/O."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a .pth file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except MemoryError:
        raise
    except Exception as e:      # whatever a damaged or foreign file makes torch.load raise is one line
        raise UserError(f"{path}: {_why_unreadable(path, e)}; re-create it or pick another file") from None


def _why_unreadable(path, err):
    """What is wrong with a file torch.load refused, in a few words."""
    if isinstance(err, OSError) and err.strerror:
        return f"cannot be read ({err.strerror})"
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if not head:
        return "is empty (0 bytes)"
    if not head.startswith((b"PK\x03\x04", b"\x80")):     # torch.save writes a zip; old torch a pickle
        return f"is not a PyTorch file (it begins {head!r})"
    if isinstance(err, pickle.UnpicklingError) and "weights_only" in str(err).lower().replace(" ", "_"):
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        what = f" ({found.group(1)})" if found else ""
        return f"holds Python objects{what} besides tensors and plain data; they are never loaded (weights_only)"
    first = "".join(ch for ch in (str(err).strip().splitlines() or [""])[0] if ch.isprintable())
    return f"not a readable checkpoint (corrupt or truncated? {type(err).__name__}: {first[:120]})"


def load_checkpoint(path, map_location="cpu"):
    return check_checkpoint(read_pth(path, map_location), path)


def check_checkpoint(obj, path):
    """obj (what read_pth gave for path) if it is a full TinyMind checkpoint whose entries are sound (the
    model a dict of tensors, the config a ModelConfig's fields, the tokenizer one that loads), else one
    clear line naming the file and the entry."""
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        fmt = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        hint = " (it is a LoRA adapter, not a full checkpoint)" if fmt == ADAPTER_FORMAT else ""
        raise UserError(f"{path}: not a TinyMind checkpoint (format {fmt!r}){hint}")
    for key in ("model", "config", "tokenizer", "meta"):
        if key not in obj:
            raise UserError(f"{path}: checkpoint has no {key!r} entry; re-create it")
    weights = obj["model"]
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in weights.items()):
        raise UserError(f"{path}: the 'model' entry is not a dict of named tensors; re-create the checkpoint")
    if not isinstance(obj["meta"], dict):
        raise UserError(f"{path}: the 'meta' entry is {type(obj['meta']).__name__}, not a dict; "
                        "re-create the checkpoint")
    check_shapes(config_from_dict(obj["config"], path), weights, path)
    load_tokenizer_from_state(obj["tokenizer"], path)   # milliseconds; a damaged one is found at load time
    return obj


def config_from_dict(d, where="checkpoint"):
    """A checkpoint's "config" entry -> ModelConfig, or one line naming `where`, the entry and the field:
    not a dict, a field this version does not know, a value of the wrong type or out of range."""
    def bad(what):
        return UserError(f"{where}: the 'config' entry {what}; re-create the checkpoint")

    if not isinstance(d, dict):
        raise bad(f"is {type(d).__name__}, not a dict of model settings")
    types = get_type_hints(ModelConfig)
    for key, value in d.items():
        if key not in types:
            raise bad(f"has the field {key!r} that this TinyMind does not know (made by a newer version?)")
        want = types[key]
        if not _has_type(value, want):
            what = "a finite number" if want is float else f"of type {want.__name__}"
            raise bad(f"has {key} = {value!r:.60} ({type(value).__name__}), not {what}")
        if key in POSITIVE_FIELDS and value <= 0:
            raise bad(f"has {key} = {value}, not a positive number")
    try:
        return ModelConfig(**d)
    except (ValueError, ZeroDivisionError) as e:      # ModelConfig's own consistency checks
        raise bad(f"is inconsistent ({e})") from None


def _has_type(value, want):
    """Is value a proper `want` (bool, int, float or str)? bool is no int here, nan no float."""
    if want is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if want in (bool, int, str):
        return isinstance(value, want) and (want is bool or not isinstance(value, bool))
    return True     # a field of another type: ModelConfig checks it


def build_model(config, state_dict=None, device="cpu", dtype=None, where="checkpoint"):
    """Build the network for config and load state_dict strictly (a mismatch is a clear error)."""
    if state_dict is not None:
        check_shapes(config, state_dict, where)
    model = TinyMindForCausalLM(config)
    if state_dict is not None:
        try:
            missing, unexpected = model.load_state_dict(state_dict, strict=False)
        except RuntimeError as e:   # a tensor of another shape than the config gives
            lines = [line.strip() for line in str(e).strip().splitlines()]
            raise UserError(f"{where}: weights do not match its config ({lines[min(1, len(lines) - 1)][:160]}); "
                            "re-create it") from None
        # a tied lm_head may be absent from the file
        missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
        if missing or unexpected:
            raise UserError(f"{where}: weights do not match its config (missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]})")
    model.to(device=device, dtype=dtype) if dtype else model.to(device)
    return model


def check_shapes(config, state_dict, where):
    """The config's sizes against the weights' shapes before the network is allocated: a config whose
    sizes are garbage must not try to build a network of terabytes."""
    c = config
    mlp = "model.layers.0.mlp." + ("experts.0." if c.use_moe else "")
    want = {"model.embed_tokens.weight": ((c.vocab_size, c.hidden_size), "vocab_size, hidden_size"),
            "model.layers.0.self_attn.q_proj.weight": ((c.num_attention_heads * c.head_dim, c.hidden_size),
                                                       "num_attention_heads * head_dim, hidden_size"),
            "model.layers.0.self_attn.k_proj.weight": ((c.num_key_value_heads * c.head_dim, c.hidden_size),
                                                       "num_key_value_heads * head_dim, hidden_size"),
            mlp + "gate_proj.weight": ((c.intermediate_size, c.hidden_size), "intermediate_size, hidden_size")}
    for key, (shape, fields_) in want.items():
        got = state_dict.get(key)
        if got is not None and tuple(got.shape) != shape:
            raise UserError(f"{where}: the 'config' entry gives {key} the shape {shape} ({fields_}) but the "
                            f"weights have {tuple(got.shape)}; re-create the checkpoint")
    counts = {"num_hidden_layers": ("model.layers.", 2, c.num_hidden_layers)}
    if c.use_moe:
        counts["num_experts"] = ("model.layers.0.mlp.experts.", 5, c.num_experts)
    for field, (prefix, part, n) in counts.items():
        found = {k.split(".")[part] for k in state_dict if k.startswith(prefix)}
        if found and len(found) != n:
            raise UserError(f"{where}: the 'config' entry has {field} = {n} but the weights have "
                            f"{len(found)}; re-create the checkpoint")


def load_model(path, device="cpu", dtype=None):
    """Checkpoint file -> (model in eval mode, tokenizer, checkpoint dict)."""
    ckpt = load_checkpoint(path)
    return (*model_from_checkpoint(ckpt, device, dtype, where=str(path)), ckpt)


def model_from_checkpoint(ckpt, device="cpu", dtype=None, where="checkpoint"):
    """A checked checkpoint dict -> (model in eval mode, tokenizer)."""
    config = config_from_dict(ckpt["config"], where)
    model = build_model(config, ckpt["model"], device, dtype, where=where).eval()
    return model, load_tokenizer_from_state(ckpt["tokenizer"], where)
