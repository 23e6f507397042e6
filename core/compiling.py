"""--compile: the model's blocks through torch.compile, and eager with one warning where that cannot work.

Each block is compiled in place (nn.Module.compile), so state_dict keys, DDP, checkpoint saving and
activation checkpointing see the same modules as in eager mode; the blocks are alike, so the first one's
graph serves the rest. The embedding, the output layer and the loss stay eager: their work is one matrix
multiply each, and the loss picks its targets by a data-dependent mask (targets_only) that would break the
graph at every batch.

    from core.compiling import compile_model
    print(compile_model(model.model.layers))      # "compile: 30 blocks through torch.compile (inductor)"
"""
import warnings

import torch

MODE = "default"        # inductor's default mode (measured against the others in docs/training.md)
_checked = {}


def compiler_works():
    """(True, "") when torch.compile can build code on this machine (inductor needs a C++ compiler on a CPU),
    else (False, why). Tried once per process on a two-line function."""
    if "ok" not in _checked:
        try:
            fn = torch.compile(lambda x: torch.sin(x) * 2 + 1, backend="inductor", mode=MODE)
            fn(torch.ones(3))
            _checked["ok"] = (True, "")
        except Exception as e:                       # any failure to build: stay eager, say why once
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            _checked["ok"] = (False, f"{type(e).__name__}: {first[:200]}")
    return _checked["ok"]


def compile_model(model, mode=MODE):
    """model.compile_parts(mode) (TinyMindForCausalLM: its blocks and its loss) -> the line to print. Where torch.compile cannot build code,
    one warning and the blocks stay eager; a later failure on one graph falls back to eager for that graph
    (torch._dynamo's suppress_errors) instead of stopping the run."""
    ok, why = compiler_works()
    if not ok:
        warnings.warn(f"--compile: torch.compile does not work here ({why}); running eager", stacklevel=2)
        return "compile: off (torch.compile failed here; eager)"
    torch._dynamo.config.suppress_errors = True
    # every block is a new module object with the same code: allow a graph per block, not the default 8
    blocks = len(model.model.layers)
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 8 + blocks)
    model.compile_parts(mode)
    return f"compile: {blocks} blocks and the loss through torch.compile (inductor, mode {mode})"
