"""--compile: the model's blocks and its loss through torch.compile, and eager with one warning where
torch.compile cannot build code on this machine.

Each block is compiled in place (nn.Module.compile), so state_dict keys, DDP, checkpoint saving and
activation checkpointing see the same modules; the blocks run the same code, so one graph serves them all.
The loss over the logits is compiled too (TinyMindForCausalLM.compile_parts); the embedding and the output
layer stay eager (one matrix multiply each; the targets are picked by a data-dependent mask).

    from core.compiling import compile_model
    print(compile_model(model))    # "compile: 30 blocks and the loss through torch.compile (inductor, mode default)"
"""
import functools
import warnings

import torch

try:            # torch >= 2.8: a condition on a symbolic size decided without a guard (no graph break)
    from torch.fx.experimental.symbolic_shapes import guard_or_false as known_true
except ImportError:                             # older torch: a graph break under --compile, the same answer
    known_true = bool

MODE = "default"        # inductor's default mode (measured against max-autotune: BENCHMARKS.md)


@functools.cache
def compiler_works():
    """(True, "") when torch.compile can build code on this machine (inductor needs a C++ compiler on a CPU),
    else (False, why). Tried once per process on a two-line function."""
    try:
        torch.compile(lambda x: torch.sin(x) * 2 + 1, backend="inductor", mode=MODE)(torch.ones(3))
        return True, ""
    except Exception as e:                           # any failure to build: stay eager, say why once
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return False, f"{type(e).__name__}: {first[:200]}"


def compile_model(model, mode=MODE):
    """model.compile_parts(mode) (TinyMindForCausalLM: its blocks and its loss) -> the line to print. Where
    torch.compile cannot build code, one warning and the model stays eager; a failure later is an error."""
    ok, why = compiler_works()
    if not ok:
        warnings.warn(f"--compile: torch.compile does not work here ({why}); running eager", stacklevel=2)
        return "compile: off (torch.compile failed here; eager)"
    # headroom for the graphs one block's code gets (training and no-grad validation, static then dynamic
    # lengths, a DPO reference's adapters_disabled): past the limit dynamo runs that code eager
    blocks = len(model.model.layers)
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 8 + blocks)
    model.compile_parts(mode)
    return f"compile: {blocks} blocks and the loss through torch.compile (inductor, mode {mode})"
