"""What the benchmark scripts share: the machine line printed beside every table, transformers' model on
TinyMind's weights (the reference most tables race against), and a run of the README's LoRA trainer.

Library module for the benchmarks of bench/ (run as `python scripts/bench_x.py` or `python -m bench.x`).
"""
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from checkpoint import layout
from core.errors import UserError
from interop.hf import hf_config_dict
from trainer.runlog import read_rows


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


def train_lora_run(base, out, steps, batch_size, flags=(), prefix=(), env=None):
    """trainer/train_lora.py on the README's data (dataset/music.jsonl) from `base` for `steps` steps, a log
    line each, no checkpoint before the end, in its own process (python *prefix train_lora.py ...) -> (the
    run's log rows, what it printed); `out` is removed after. flags: more of the trainer's flags."""
    root = layout.repo_root()
    cmd = [sys.executable, *prefix, str(root / "trainer" / "train_lora.py"), "--base", str(base),
           "--data_path", str(root / "dataset" / "music.jsonl"), "--out_dir", str(out), "--max_steps", str(steps),
           "--batch_size", str(batch_size), "--log_interval", "1", "--eval_interval", "0", "--save_interval", "0",
           "--lora_name", "bench", "--device", "cpu", *flags]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise UserError(f"the trainer failed ({' '.join(flags)}): {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    rows = read_rows(next((Path(out) / "logs").glob("bench_*.jsonl")))
    shutil.rmtree(out)
    return rows, done.stdout
