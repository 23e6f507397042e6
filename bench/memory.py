"""Benchmark: training memory on this CPU: the trainer's estimate (trainer/memory.py) against the measured
peak, with and without --gradient_checkpointing, and the largest batch x length of a Qwen2.5-0.5B-shaped
model with LoRA that the estimate fits in a budget.

    python scripts/bench_memory.py                              # small preset and SmolLM2, then Qwen2.5-0.5B
    python scripts/bench_memory.py --cases smollm2_lora --rows 16 --length 512

Each measured case runs in a fresh process: the model built (the small preset and the Qwen2.5-0.5B shape
with random weights, SmolLM2 from out/smollm2_135m.pth), LoRA applied or not, the frozen base held in
the compute dtype as the trainer holds it; then the estimate for one batch of --rows x --length tokens,
every token a target (the most a batch of that shape can need); then the peak resident set (VmHWM,
reset through /proc/self/clear_refs once the weights are in) over --steps optimizer steps of
trainer.step's own forward/backward and update on such a batch. "measured" is that peak less the
process's memory that is not the model's tensors (resident set before the steps less the weights).
"""
import argparse
import gc
import json
import subprocess
import sys
from pathlib import Path

import torch

from bench.common import cpu_name
from checkpoint import layout
from core.cli import ArgumentParser, run_cli
from core.errors import UserError
from model.config import ModelConfig, get_preset
from model.model import TinyMindForCausalLM
from trainer.memory import size

# Qwen2.5-0.5B's published config (config.json of Qwen/Qwen2.5-0.5B)
QWEN_05B = dict(vocab_size=151936, hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                num_key_value_heads=2, intermediate_size=4864, rope_theta=1e6, rms_norm_eps=1e-6,
                attention_bias=True, tie_word_embeddings=True, model_type="qwen2")
# name: (model, LoRA, dtype)
CASES = {"small_full_f32": ("small", False, "float32"), "small_full_bf16": ("small", False, "bfloat16"),
         "smollm2_lora": ("smollm2", True, "bfloat16"), "smollm2_full": ("smollm2", False, "bfloat16"),
         "qwen05b_lora": ("qwen05b", True, "bfloat16")}


def build(model_name, lora, dtype_name):
    """The model as the trainer would train it -> (model, dtype, autocast)."""
    from model.lora import LoRAConfig, apply_lora
    from trainer.components import hold_frozen_in, mixed_precision
    torch.manual_seed(0)
    if model_name == "smollm2":
        from checkpoint.pth import load_checkpoint, model_from_checkpoint
        path = layout.smollm2_path(layout.out_dir())
        if not Path(path).is_file():
            raise UserError(f"{path} not found: run `python scripts/convert_model.py --smollm2` first")
        model = model_from_checkpoint(load_checkpoint(path))[0]
    else:
        config = get_preset("small", vocab_size=6400) if model_name == "small" else ModelConfig(**QWEN_05B)
        model = TinyMindForCausalLM(config)
    if lora:
        apply_lora(model, LoRAConfig(r=8, alpha=16))
    dtype, autocast, scaler = mixed_precision(dtype_name, torch.device("cpu"))
    hold_frozen_in(model, dtype)
    return model.train(), dtype, autocast, scaler


def rss(field="VmRSS"):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(case, rows, length, checkpointing, steps):
    """One measured case in this (fresh) process -> dict printed as JSON."""
    from types import SimpleNamespace
    from trainer.components import make_optimizer
    from trainer.distributed import Dist
    from trainer.memory import estimate_memory, static_bytes
    from trainer.step import accumulate_gradients, apply_gradients
    from core.malloc import return_freed_memory
    return_freed_memory()                            # as every trainer does first
    model, dtype, autocast, scaler = build(*CASES[case])
    model.set_gradient_checkpointing(checkpointing)
    cfg = SimpleNamespace(weight_decay=0.1, learning_rate=1e-4)
    est = estimate_memory(model, dtype, autocast, [(rows, length, rows * (length - 1))])
    optimizer = make_optimizer(model, cfg, torch.device("cpu"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    ids = torch.randint(0, model.config.vocab_size, (rows, length), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "labels": ids}
    gc.collect()
    outside = rss() - static_bytes(model)[0]         # the process less the weights
    Path("/proc/self/clear_refs").write_text("5")    # VmHWM := VmRSS
    for _ in range(steps):
        stats, n = accumulate_gradients(model, [batch], Dist(), scaler, autocast)
        apply_gradients(optimizer, scaler, trainable, 1.0, n)
    return {"estimate": est.total, "measured": rss("VmHWM") - outside, "line": est.line()}


def measure(case, rows, length, checkpointing, steps):
    cmd = [sys.executable, "-m", "bench.memory", "--child", case, "--rows", str(rows), "--length", str(length),
           "--steps", str(steps)] + (["--gradient_checkpointing"] if checkpointing else [])
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=layout.repo_root())
    if done.returncode:
        raise UserError(f"case {case} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def largest_fits(budget, lengths, checkpointing):
    """{length: the largest rows whose estimate (Qwen2.5-0.5B shape, LoRA, bfloat16) is within budget}."""
    from trainer.memory import Estimator
    model, dtype, autocast, _ = build("qwen05b", True, "bfloat16")
    model.set_gradient_checkpointing(checkpointing)
    fits = {}
    for length in lengths:
        est = Estimator(model, dtype, autocast, length)             # the block probed once a length
        lo, hi = 0, 4096                     # the largest rows within budget: lo fits, hi + 1 does not
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if est.at([(mid, length, mid * (length - 1))]).total <= budget:
                lo = mid
            else:
                hi = mid - 1
        fits[length] = lo
    return fits


def main(argv=None):
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="small_full_f32,small_full_bf16,smollm2_lora,smollm2_full",
                    help=f"comma list of {', '.join(CASES)}")
    ap.add_argument("--rows", type=int, default=16, help="rows of the measured batch")
    ap.add_argument("--length", type=int, default=512, help="tokens of each row")
    ap.add_argument("--steps", type=int, default=2, help="optimizer steps measured")
    ap.add_argument("--budget_gb", type=float, default=8.0, help="the memory budget of the Qwen2.5-0.5B search")
    ap.add_argument("--fit_lengths", default="512,1024,2048,4096", help="row lengths of the search ('' = skip)")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--gradient_checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.rows, args.length, args.gradient_checkpointing, args.steps)))
        return
    cases = [c for c in args.cases.split(",") if c]
    bad = [c for c in cases if c not in CASES]
    if bad:
        raise UserError(f"--cases {','.join(bad)}: unknown; use {', '.join(CASES)}")
    print(f"{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads; one batch of "
          f"{args.rows} x {args.length} tokens, {args.steps} steps\n")
    print("| case | checkpointing | estimate | measured peak | estimate / measured |")
    print("|---|---|---:|---:|---:|")
    for case in cases:
        for ckpt in (False, True):
            r = measure(case, args.rows, args.length, ckpt, args.steps)
            print(f"| {case} | {'on' if ckpt else 'off'} | {size(r['estimate'])} | {size(r['measured'])} | "
                  f"{r['estimate'] / r['measured']:.2f} |", flush=True)
    lengths = [int(x) for x in args.fit_lengths.split(",") if x]
    if lengths:
        budget = int(args.budget_gb * (1 << 30))
        off, on = largest_fits(budget, lengths, False), largest_fits(budget, lengths, True)
        print(f"\nQwen2.5-0.5B shape (494M, random weights), LoRA r=8 on all projections, bfloat16: the largest "
              f"batch (rows) whose estimate is within {args.budget_gb:g} GB\n")
        print("| length | rows, checkpointing off | rows, checkpointing on |")
        print("|---:|---:|---:|")
        for length in lengths:
            print(f"| {length} | {off[length]} | {on[length]} |")


if __name__ == "__main__":
    run_cli(main)
