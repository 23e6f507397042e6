"""The LoRA adapter file: what it holds, whether it fits a base, and putting it on one.

An adapter file is {"format": "tinymind-lora-v1", "lora" (the lora_A / lora_B weights), "lora_config",
"base" ({path, sha256} of the checkpoint it was trained on), "config" (the base's model config),
"tokenizer_sha256", "meta"}. adapter_fits is THE rule for "this adapter goes on that base": the same
model config (up to fields that do not change what the base computes) and the same tokenizer; a different
base file (sha256) is refused too unless forced. The layer maths is model/lora.py.

Library module, no command:
    from checkpoint.adapter import load_model_with_adapter
    model, tok, base_ckpt, adapter = load_model_with_adapter("out/lora/lora_music_512.pth")
"""
import time

from checkpoint.pth import (ADAPTER_FORMAT, FORMAT, atomic_torch_save, build_model, config_from_dict, file_sha256,
                         load_checkpoint, read_pth)
from model.config import ModelConfig
from core.errors import UserError
from model.lora import LoRAConfig, apply_lora, lora_state_dict, unwrap_model
from checkpoint.layout import find_adapter_base
from tokenizer.tokenizer import load_tokenizer_from_state

# config fields that do not change the function the base computes, so they may differ
CONFIG_FIELDS_IGNORED = {"dropout", "aux_loss_coef", "model_type"}
REQUIRED = ("lora", "lora_config", "base", "config", "tokenizer_sha256")


def save_adapter(path, model, cfg, base_path, base_sha256, model_config, tokenizer_sha256, meta=None):
    """Write an adapter file (atomically): the LoRA weights plus what they were trained on."""
    meta = dict(meta or {})
    meta.setdefault("stage", "lora")
    meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S"))
    obj = {"format": ADAPTER_FORMAT,
           "lora": {k: v.detach().cpu().clone() for k, v in lora_state_dict(model).items()},
           "lora_config": cfg.to_dict(),
           "base": {"path": str(base_path), "sha256": base_sha256},
           "config": model_config.to_dict() if isinstance(model_config, ModelConfig) else dict(model_config),
           "tokenizer_sha256": tokenizer_sha256,
           "meta": meta}
    atomic_torch_save(obj, path)


def is_adapter(obj):
    return isinstance(obj, dict) and obj.get("format") == ADAPTER_FORMAT


def load_adapter(path):
    """Read an adapter file -> its dict (plus "file": the path it was read from). One clear line on a
    missing, corrupt or foreign file."""
    obj = read_pth(path)
    if not is_adapter(obj):
        fmt = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        hint = " (it is a full checkpoint, not an adapter)" if fmt == FORMAT else ""
        raise UserError(f"{path}: not a TinyMind LoRA adapter (format {fmt!r}){hint}")
    for key in REQUIRED:
        if key not in obj:
            raise UserError(f"{path}: adapter has no {key!r} entry; re-create it with trainer/train_lora.py")
    config_from_dict(obj["config"], path)           # a garbage model config is one line here, not later
    if not isinstance(obj["lora_config"], dict) or not isinstance(obj["lora"], dict) \
            or not isinstance(obj["base"], dict) or not isinstance(obj["tokenizer_sha256"], str):
        raise UserError(f"{path}: adapter entries are damaged (lora, lora_config, base, tokenizer_sha256); "
                        "re-create it with trainer/train_lora.py")
    obj["file"] = str(path)
    return obj


def config_diff(a, b):
    """The model-config fields that differ between two config dicts, as 'name a vs b' strings."""
    a, b = ModelConfig.from_dict(a).to_dict(), ModelConfig.from_dict(b).to_dict()
    return [f"{k} {a[k]} vs {b[k]}" for k in a if k not in CONFIG_FIELDS_IGNORED and a[k] != b[k]]


def adapter_fits(adapter, base_config, base_tokenizer_sha256):
    """Why the adapter cannot go on a base with this model config and tokenizer: [] when it fits."""
    reasons = []
    diff = config_diff(adapter["config"], base_config)
    if diff:
        reasons.append(f"model config differs (adapter vs base: {'; '.join(diff[:4])})")
    if base_tokenizer_sha256 != adapter["tokenizer_sha256"]:
        reasons.append(f"tokenizer differs (sha256 {adapter['tokenizer_sha256'][:12]} vs "
                       f"{base_tokenizer_sha256[:12]})")
    return reasons


def check_adapter(adapter, base_ckpt, base_path, force=False, base_tokenizer=None):
    """Refuse a base the adapter does not fit (adapter_fits), or another base file than the one it was
    trained on (sha256) unless force. Shapes are checked again when the weights load."""
    name = adapter.get("file", "adapter")
    tokenizer = base_tokenizer or load_tokenizer_from_state(base_ckpt["tokenizer"], base_path)
    reasons = adapter_fits(adapter, base_ckpt["config"], tokenizer.sha256)
    if reasons:
        raise UserError(f"{name} does not fit {base_path}: {'; '.join(reasons)}; "
                        "use the base it was trained on")
    want = adapter["base"].get("sha256")
    if not force and want:
        got = file_sha256(base_path)
        if got != want:
            raise UserError(f"{name} was trained on {adapter['base'].get('path')} (sha256 {want[:12]}), "
                            f"but {base_path} has sha256 {got[:12]}; pass the right --base, or --force to "
                            "use this one anyway")


def attach_adapter(model, adapter):
    """Apply the adapter's LoRA config to model and load its weights strictly (names and shapes)."""
    name = adapter.get("file", "adapter")
    apply_lora(model, LoRAConfig.from_dict(adapter["lora_config"]))
    want = lora_state_dict(model)
    got = adapter["lora"]
    missing, unexpected = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or unexpected:
        raise UserError(f"{name}: LoRA weights do not match the model (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]})")
    for k, v in got.items():
        if tuple(v.shape) != tuple(want[k].shape):
            raise UserError(f"{name}: {k} has shape {tuple(v.shape)}, the model needs {tuple(want[k].shape)}")
    unwrap_model(model).load_state_dict(got, strict=False)
    return model


def load_model_with_adapter(adapter_path, base_path=None, device="cpu", force=False, out_dir=None):
    """-> (model in eval mode with the adapter attached, unmerged; tokenizer; base checkpoint dict with
    "path" added; adapter dict). The base is base_path, else the one the adapter records
    (checkpoint.layout.find_adapter_base, which also looks in out_dir)."""
    adapter = load_adapter(adapter_path)
    base = find_adapter_base(adapter, base_path, out_dir)
    base_ckpt = load_checkpoint(base)
    base_ckpt["path"] = str(base)
    tokenizer = load_tokenizer_from_state(base_ckpt["tokenizer"], base)
    check_adapter(adapter, base_ckpt, base, force, tokenizer)
    model = build_model(config_from_dict(base_ckpt["config"], base), base_ckpt["model"], where=str(base))
    attach_adapter(model, adapter)
    return model.to(device).eval(), tokenizer, base_ckpt, adapter
