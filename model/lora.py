"""LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"), written by hand.

LoRALinear wraps an existing nn.Linear (composition: a real module, so torch.compile, DDP, state_dict()
and print(model) all see it). apply_lora wraps the targeted layers and freezes everything else; merge,
unmerge and merged_state_dict fold the low-rank update into the base weights. The fused autograd functions
LoRALinear runs through are model/lora_fused.py. The adapter file (what it records, checking it against a
base, attaching it) is checkpoint/adapter.py.

    from model.lora import LoRAConfig, apply_lora
    apply_lora(model, LoRAConfig(r=8, alpha=16))                  # before building the optimizer
"""
import contextlib
import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.errors import UserError
from model.lora_fused import HeldLoRAFunction, LoRAFunction

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoRAConfig:
    r: int = 8                            # rank of the update B @ A (--lora_rank)
    alpha: float = 16                     # the update is scaled by alpha / r (--lora_alpha)
    dropout: float = 0.0                  # dropout on the input of the LoRA branch (--lora_dropout)
    targets: tuple = DEFAULT_TARGETS      # last component of the module names to wrap (--lora_targets)
    use_rslora: bool = False              # scale by alpha / sqrt(r) (rsLoRA, Kalajdzievski 2023)

    def __post_init__(self):
        if isinstance(self.targets, str):   # "q_proj,v_proj" from a flag
            self.targets = [t for t in self.targets.replace(" ", ",").split(",") if t]
        self.targets = tuple(self.targets)

    def to_dict(self):
        d = asdict(self)
        d["targets"] = list(self.targets)
        return d

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class LoRAConfigError(UserError):
    """A LoRAConfig value this model cannot take; .field names it (r, alpha, dropout, targets)."""

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field


class LoRALinear(nn.Module):
    """y = base(x) + scaling * B(A(dropout(x))), with A: in -> r, B: r -> out.

    A starts like nn.Linear's default (kaiming-uniform, as PEFT and the paper's code do) and B at zero, so
    the wrapped layer equals the base layer until B has trained (paper, sec. 4.1). The low-rank path never
    forms the full (out, in) matrix: x @ A^T is (..., r), then @ B^T.
    """

    def __init__(self, base: nn.Linear, r=8, alpha=16, dropout=0.0, use_rslora=False):
        super().__init__()
        self.base = base
        self.r, self.alpha, self.use_rslora = r, alpha, use_rslora
        # rsLoRA (Kalajdzievski 2023, "A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA")
        self.scaling = alpha / math.sqrt(r) if use_rslora else alpha / r
        factory = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Linear(base.in_features, r, bias=False, **factory)
        self.lora_B = nn.Linear(r, base.out_features, bias=False, **factory)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.disabled = False           # adapters_disabled(): the base layer alone (a DPO run's reference)
        self.reset_lora_parameters()

    def reset_lora_parameters(self):
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x):
        if self.merged or self.disabled:
            return self.base(x)
        w, device = self.base.weight, x.device.type
        plain = isinstance(self.lora_dropout, nn.Identity) or not self.training
        autocast = torch.is_autocast_enabled(device)
        if plain and not autocast and x.dtype == w.dtype:
            return LoRAFunction.apply(x, w, self.base.bias, self.lora_A.weight, self.lora_B.weight, self.scaling)
        bias = self.base.bias
        if plain and autocast and w.dtype == torch.get_autocast_dtype(device) and not w.requires_grad \
                and (bias is None or not bias.requires_grad):
            # a frozen base held in the autocast dtype (trainer.components.hold_frozen_in)
            with torch.autocast(device, enabled=False):
                return HeldLoRAFunction.apply(x, w, bias, self.lora_A.weight, self.lora_B.weight, self.scaling)
        # the general path (dropout on the LoRA input, or autocast): A and B share the base's dtype and
        # autocast handles mixed precision, so no casts here
        y = self.base(x)
        h = F.linear(self.lora_dropout(x), self.lora_A.weight)                 # (..., r)
        # scale the rank-r activations, not the (..., out) ones: r/out times fewer multiplications
        return y + F.linear(h * self.scaling, self.lora_B.weight)             # (..., out)

    @torch.no_grad()
    def delta_weight(self):
        """scaling * B @ A as an (out, in) float32 matrix."""
        return (self.lora_B.weight.float() @ self.lora_A.weight.float()) * self.scaling

    @torch.no_grad()
    def merge(self):
        """Fold the update into base.weight (float32 math, cast back). Merging twice is merging once."""
        if not self.merged:
            w = self.base.weight
            w.copy_((w.float() + self.delta_weight()).to(w.dtype))
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        if self.merged:
            w = self.base.weight
            w.copy_((w.float() - self.delta_weight()).to(w.dtype))
            self.merged = False

    def extra_repr(self):
        return (f"r={self.r}, alpha={self.alpha:g}, scaling={self.scaling:.4g}"
                f"{', rslora' if self.use_rslora else ''}{', merged' if self.merged else ''}")


def unwrap_model(model):
    """The plain module under DistributedDataParallel (.module) and torch.compile (._orig_mod)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


@contextlib.contextmanager
def adapters_disabled(model):
    """Within the block every LoRALinear of model computes its base layer alone: the model before its
    adapter, with no second copy of the weights (a DPO run's reference). A merged adapter cannot be left out."""
    layers = [m for m in unwrap_model(model).modules() if isinstance(m, LoRALinear)]
    if any(m.merged for m in layers):
        raise ValueError("adapters_disabled needs unmerged adapters")
    for m in layers:
        m.disabled = True
    try:
        yield
    finally:
        for m in layers:
            m.disabled = False


def _lora_modules(model):
    return [(n, m) for n, m in unwrap_model(model).named_modules() if isinstance(m, LoRALinear)]


def linear_names(model):
    """The distinct last name components of the model's nn.Linear layers (what --lora_targets may name)."""
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})


def apply_lora(model, cfg: LoRAConfig):
    """Wrap every nn.Linear whose last name component is in cfg.targets in a LoRALinear, in place, and
    freeze every parameter that is not LoRA's. Returns the wrapped module names.

    Build the base and load its weights strictly before calling this; build the optimizer after it.
    """
    model = unwrap_model(model)
    if _lora_modules(model):
        raise ValueError("apply_lora: the model already has LoRA layers")
    if not isinstance(cfg.r, int) or cfg.r < 1:
        raise LoRAConfigError("r", f"LoRA rank must be a positive integer, got {cfg.r!r}")
    if not cfg.alpha > 0:
        raise LoRAConfigError("alpha", f"LoRA alpha must be positive, got {cfg.alpha!r}")
    if not 0 <= cfg.dropout < 1:
        raise LoRAConfigError("dropout", f"LoRA dropout must be in [0, 1), got {cfg.dropout!r}")
    available = linear_names(model)
    unknown = [t for t in cfg.targets if t not in available]
    if unknown or not cfg.targets:
        what = f"unknown name(s) {', '.join(unknown)}" if unknown else "no layer named"
        raise LoRAConfigError("targets", f"LoRA targets: {what}; this model's linear layers are "
                              f"{', '.join(available)} (default: {','.join(DEFAULT_TARGETS)})")
    targeted = [(n, m) for n, m in model.named_modules()
                if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in cfg.targets]
    name, narrow = min(targeted, key=lambda nm: min(nm[1].in_features, nm[1].out_features))
    width = min(narrow.in_features, narrow.out_features)
    if cfg.r > width:   # B @ A then has rank at most `width`: the rest is only memory and time
        raise LoRAConfigError("r", f"LoRA rank {cfg.r} is above the width of the layers it adapts ({name} is "
                              f"{narrow.out_features}x{narrow.in_features}); use at most {width} (8-64 is usual)")
    shared = {}   # a weight used by two modules (tied lm_head) cannot take a merge on one side only
    for n, p in model.named_parameters(remove_duplicate=False):
        shared.setdefault(id(p), []).append(n)

    wrapped = []
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear) or name.rsplit(".", 1)[-1] not in cfg.targets:
            continue
        owners = shared[id(module.weight)]
        if len(owners) > 1:
            raise LoRAConfigError("targets", f"LoRA targets: {name} shares its weight with {', '.join(owners)} "
                                  "(tie_word_embeddings); leave it out of the targets")
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(module, cfg.r, cfg.alpha, cfg.dropout, cfg.use_rslora))
        wrapped.append(name)
    for n, p in model.named_parameters():
        p.requires_grad = ".lora_A." in n or ".lora_B." in n
    return wrapped


def count_parameters(model):
    """(trainable, total) parameter counts, a tied weight counted once."""
    params = {id(p): p for p in unwrap_model(model).parameters()}.values()
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def merge_lora(model):
    for _, m in _lora_modules(model):
        m.merge()
    return model


def unmerge_lora(model):
    for _, m in _lora_modules(model):
        m.unmerge()
    return model


@torch.no_grad()
def merged_state_dict(model):
    """A state dict with exactly the base model's keys, LoRA folded into the weights (float32 math, cast
    back to the weight's dtype). The model itself is left as it is, merged or not."""
    model = unwrap_model(model)
    lora = dict(_lora_modules(model))
    out = {}
    for key, value in model.state_dict().items():
        prefix, _, leaf = key.rpartition(".")              # "...q_proj.base", "weight"
        name, _, owner = prefix.rpartition(".")            # "...q_proj", "base"
        m = lora.get(name)
        if m is None or owner not in ("base", "lora_A", "lora_B"):
            out[key] = value
        elif owner == "base":                              # lora_A / lora_B keys are dropped
            if leaf == "weight" and not m.merged:
                value = (value.float() + m.delta_weight()).to(value.dtype)
            out[f"{name}.{leaf}"] = value
    return out


def lora_state_dict(model):
    """{name: tensor} of the lora_A / lora_B weights only."""
    return {k: v for k, v in unwrap_model(model).state_dict().items() if ".lora_A." in k or ".lora_B." in k}
