"""Benchmark: training tokens/s eager against --compile (torch.compile of each block and the loss,
core/compiling.py), for the small preset's full fine-tuning and SmolLM2's LoRA, in bfloat16 and float32.

    python scripts/bench_compile.py                                   # the four cases, mode default
    python scripts/bench_compile.py --cases smollm2_lora_bf16 --modes default,max-autotune-no-cudagraphs

Each case runs in a fresh process: the model built as the trainer trains it (bench/memory.py build: LoRA
applied, the frozen base held in the compute dtype), one eager copy and one compiled copy per mode, each
with its own AdamW; then trainer.step's own forward/backward and update on batches of --rows rows whose
lengths cycle through --lengths (a chat dataset's batches differ in length, so the compiled graphs must be
dynamic), half of each row a target. Warm-up: each length once per copy (the compile happens here; its
seconds are reported). Timed: --rounds rounds, each copy one step per length in turn (round-robin, so a
machine that gets busier or quieter affects every row alike); tokens/s = tokens / seconds over all of them.
"""
import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import time
from types import SimpleNamespace

import torch

from bench.common import cpu_name, train_lora_run
from checkpoint import layout
from core.cli import ArgumentParser, run_cli
from core.errors import UserError

# name: (model, LoRA, dtype), as bench/memory.py's CASES
CASES = {"small_full_bf16": ("small", False, "bfloat16"), "small_full_f32": ("small", False, "float32"),
         "smollm2_lora_bf16": ("smollm2", True, "bfloat16"), "smollm2_lora_f32": ("smollm2", True, "float32")}


def child(case, modes, rows, lengths, rounds):
    """One case in this (fresh) process -> {name: (warm-up s, tokens/s)} printed as JSON."""
    from bench.memory import build
    from core.compiling import compile_model
    from core.malloc import return_freed_memory
    from trainer.components import make_optimizer
    from trainer.distributed import Dist
    from trainer.step import accumulate_gradients, apply_gradients
    return_freed_memory()                                   # as every trainer does first
    model, _, autocast, scaler = build(*CASES[case])
    copies = {}
    for name in ["eager", *modes]:
        m = model if name == "eager" else copy.deepcopy(model)
        if name != "eager":
            line = compile_model(m, name)
            if line.startswith("compile: off"):
                raise UserError(f"torch.compile does not work here: {line}")
        opt = make_optimizer(m, SimpleNamespace(weight_decay=0.1, learning_rate=1e-5), torch.device("cpu"))
        copies[name] = (m.train(), opt, [p for p in m.parameters() if p.requires_grad])
    g = torch.Generator().manual_seed(0)
    batches = []
    for length in lengths:
        ids = torch.randint(0, model.config.vocab_size, (rows, length), generator=g)
        labels = ids.clone()
        labels[:, : length // 2] = -100
        batches.append({"input_ids": ids, "labels": labels})

    def step(name, batch):
        m, opt, trainable = copies[name]
        t = time.perf_counter()
        _, n = accumulate_gradients(m, [batch], Dist(), scaler, autocast)
        apply_gradients(opt, scaler, trainable, 1.0, n)
        return time.perf_counter() - t

    warm = {name: sum(step(name, b) for b in batches) for name in copies}
    spent = dict.fromkeys(copies, 0.0)
    for _ in range(rounds):
        for batch in batches:
            for name in copies:
                spent[name] += step(name, batch)
    tokens = rounds * sum(b["input_ids"].numel() for b in batches)
    return {name: (warm[name], tokens / spent[name]) for name in copies}


def main(argv=None):
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    ap.add_argument("--modes", default="default", help="comma list of torch.compile modes to time against eager")
    ap.add_argument("--rows", type=int, default=8, help="rows of each batch")
    ap.add_argument("--lengths", default="256,224,192", help="the batches' lengths, cycled")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds (each: one step per length, every copy)")
    ap.add_argument("--trainer_steps", type=int, default=0,
                    help="also run the README's LoRA trainer on SmolLM2 this many steps, eager and --compile (0 = no)")
    ap.add_argument("--trainer_batch", type=int, default=8, help="the trainer runs' --batch_size")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    try:
        lengths = [int(x) for x in args.lengths.split(",") if x]
    except ValueError:
        raise UserError(f"--lengths {args.lengths}: give whole numbers, comma-separated") from None
    if min(args.rows, args.rounds, args.trainer_batch) < 1 or not lengths or min(lengths) < 2 or not modes:
        raise UserError("--rows, --rounds and --trainer_batch must be >= 1, --lengths numbers >= 2, --modes not empty")
    if args.child:
        print(json.dumps(child(args.child, modes, args.rows, lengths, args.rounds)))
        return
    cases = [c for c in args.cases.split(",") if c]
    bad = [c for c in cases if c not in CASES]
    if bad:
        raise UserError(f"--cases {','.join(bad)}: unknown; use {', '.join(CASES)}")
    print("command: python scripts/bench_compile.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at start; batches of {args.rows} "
          f"rows x {'/'.join(map(str, lengths))} tokens, half of each row a target, {args.rounds} timed rounds\n")
    if cases:
        print("| case | run | warm-up s (compiling) | tokens/s | vs eager |")
        print("|---|---|---:|---:|---:|")
    for case in cases:
        cmd = [sys.executable, "-m", "bench.compile", "--child", case, "--modes", ",".join(modes),
               "--rows", str(args.rows), "--lengths", ",".join(map(str, lengths)), "--rounds", str(args.rounds)]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=layout.repo_root())
        if done.returncode:
            raise UserError(f"case {case} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        eager = result["eager"][1]
        for name, (warm, tok_s) in result.items():
            print(f"| {case} | {name} | {warm:.1f} | {tok_s:,.0f} | {tok_s / eager:.2f}x |", flush=True)
    if args.trainer_steps:
        trainer_rows(args.trainer_steps, args.trainer_batch)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


def trainer_rows(steps, batch):
    """train_lora.py on dataset/music.jsonl from SmolLM2, eager then --compile: tokens/s over the steps after
    the first 4 (the compile's), and the whole process's seconds."""
    base = layout.smollm2_path(layout.out_dir())
    if not base.is_file():
        raise UserError(f"{base} not found: run `python scripts/convert_model.py --smollm2` first")
    skip = 4
    if steps <= skip:
        raise UserError(f"--trainer_steps must be above {skip} (the first {skip} are compile warm-up)")
    print(f"\ntrain_lora.py on SmolLM2, dataset/music.jsonl, --batch_size {batch}, {steps} steps (--dtype auto: "
          f"bfloat16 where the CPU has it); tokens/s over steps {skip + 1}-{steps}\n")
    print("| run | tokens/s | vs eager | the process, s |")
    print("|---|---:|---:|---:|")
    eager = None
    for flags in ([], ["--compile"]):
        t = time.perf_counter()
        rows, said = train_lora_run(base, layout.out_dir() / ".bench_compile", steps, batch, ["--val_ratio", "0", *flags])
        if "compile: off" in said:
            raise UserError("torch.compile does not work here: the --compile run went eager")
        wall = time.perf_counter() - t
        logged = [r for r in rows if "tok_per_s" in r]
        # "tokens" counts the run's tokens so far: a step's own are the difference
        done = [(b["tokens"] - a["tokens"], b["tok_per_s"]) for a, b in zip(logged, logged[1:])][skip - 1:]
        tok_s = sum(n for n, _ in done) / sum(n / r for n, r in done) if done else 0.0
        eager = eager or tok_s
        print(f"| {' '.join(flags) or 'eager'} | {tok_s:,.0f} | {tok_s / eager:.2f}x | {wall:.0f} |", flush=True)


if __name__ == "__main__":
    run_cli(main)
