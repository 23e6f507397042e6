"""Benchmark: LoRA training on a busy machine: tokens/s idle and with busy neighbour processes, OpenMP's
spinning waits (torch's default) against passive ones (core/openmp.py, the trainers' default), on every core
and on one, through the real trainer (trainer/train_lora.py, one process per run).

    python scripts/bench_busy.py                         # SmolLM2, the README's data, 0/1/2 neighbours
    python scripts/bench_busy.py --model small --steps 8

A neighbour is a Python process that spins (`while True: pass`), started before the run and killed after it,
as a user's other program keeping a core busy. Each run trains the README's LoRA on dataset/music.jsonl
for --steps steps, batch --batch_size, from the same base and seed; its rate is the trainer's own per-step
tokens/s (real tokens), median over the steps after the first. "share" is the rate over the idle rate
with spinning waits on every core; a fair share with k neighbours on n cores, each neighbour wanting one
core and the run wanting all n, is n / (n + k) of the machine. The spinning run starts the trainer after
torch is loaded (`python -c "import torch; ..."`), so that core/openmp.py comes too late to change the
policy, as before it existed.
"""
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from bench.common import cpu_name, train_lora_run
from bench.train_dtype import base_for
from core.cli import ArgumentParser, run_cli
from core.errors import UserError

SPIN = "while True: pass"
# name: (--threads, torch loaded before the trainer: OpenMP's default spinning waits)
POLICIES = {"every core, spinning waits (torch's default)": ("0", True),
            "every core, passive waits (the trainers' default)": ("0", False),
            "one thread (--threads 1)": ("1", False)}
START_AFTER_TORCH = "import sys, runpy, torch; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"


@contextlib.contextmanager
def neighbours(k):
    procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(k)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def run(base, threads, spinning, out, args):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    rows, printed = train_lora_run(base, out, args.steps, args.batch_size, ["--val_ratio", "0", "--threads", threads],
                                   prefix=["-c", START_AFTER_TORCH] if spinning else [], env=env)
    said = next((l for l in printed.splitlines() if l.startswith("threads:")), "")
    return statistics.median([r["tok_per_s"] for r in rows if "tok_per_s" in r][1:]), said


def main(argv=None):
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="a preset (random weights) or a .pth in out/")
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per run (the first is left out)")
    ap.add_argument("--batch_size", type=int, default=8, help="the trainer's --batch_size")
    ap.add_argument("--neighbours", default="0,1,2", help="comma list of busy neighbour counts")
    args = ap.parse_args(argv)
    if args.steps < 3:
        raise UserError("--steps: at least 3 (the first step is left out of the rate)")
    counts = [int(k) for k in args.neighbours.split(",")]
    n = os.cpu_count()
    print(f"machine: {cpu_name()}, {n} cores, torch {torch.__version__}; LoRA on {args.model}, batch "
          f"{args.batch_size}, {args.steps} steps\n")
    print("| busy neighbours | threads and waits | tok/s | share of idle | fair share | what the run said |")
    print("|---:|---|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as work:
        base, _ = base_for(args.model, Path(work))
        idle = None
        for k in counts:
            for name, (threads, spinning) in POLICIES.items():
                with neighbours(k):
                    rate, said = run(base, threads, spinning, Path(work) / "out", args)
                idle = idle or rate
                print(f"| {k} | {name} | {rate:,.0f} | {rate / idle:.0%} | {n / (n + k):.0%} | {said} |", flush=True)


if __name__ == "__main__":
    run_cli(main)
