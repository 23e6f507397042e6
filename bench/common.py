"""What the benchmark scripts share: the machine line printed beside every table, and transformers' model
on TinyMind's weights (the reference most tables race against).

Library module for the benchmarks of bench/ (run as `python scripts/bench_x.py` or `python -m bench.x`).
"""
import platform
from pathlib import Path

from interop.hf import hf_config_dict


def cpu_name():
    """The CPU's model name from /proc/cpuinfo, else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def to_hf(model):
    """transformers' LlamaForCausalLM holding a TinyMind model's weights (strict load), in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM    # optional (requirements-dev.txt), 2 s of start-up
    hf = LlamaForCausalLM(LlamaConfig(**hf_config_dict(model.config)))
    hf.load_state_dict(model.state_dict(), strict=True)
    return hf.eval()
