"""Benchmark: LoRA training tokens/s in bfloat16 against float32 on this CPU, and how far bfloat16's loss curve
strays from float32's, through the real trainer (trainer/train_lora.py, one process per run).

    python scripts/bench_train_dtype.py                        # small preset and SmolLM2, 30 steps each
    python scripts/bench_train_dtype.py --models small --steps 20 --batch_size 16

Every run of a model starts from the same base (the small preset: random weights saved once, seed 0;
smollm2: out/smollm2_135m.pth), trains the README's LoRA (rank 8, all projections) on the same data
(dataset/music.jsonl, the README command's), seed and batches, with
--dtype float32 or bfloat16 (autocast, float32 master weights, the frozen base held in bfloat16). Rates are
the trainer's own per-step tokens/s (real tokens, no padding), median over the steps after the first;
runs alternate float32/bfloat16 --repeats times and the best median counts. The loss columns compare the
two curves step by step, and the validation loss (5% of the data held out) after the last step.
"""
import statistics
import sys
import tempfile
from pathlib import Path

import torch


from core.cli import ArgumentParser, run_cli
from checkpoint import layout
from checkpoint.pth import save_checkpoint
from model.config import PRESETS, get_preset
from core.errors import UserError
from inference.load import find_model
from model.model import TinyMindForCausalLM
from inference.precision import cpu_has_bf16
from tokenizer.tokenizer import load_default_tokenizer
from bench.common import cpu_name, train_lora_run

DTYPES = ("float32", "bfloat16")


def base_for(spec, work):
    """The base checkpoint file of a preset (random weights, written once into work) or a model name."""
    if spec in PRESETS:
        torch.manual_seed(0)
        tok = load_default_tokenizer()
        model = TinyMindForCausalLM(get_preset(spec, vocab_size=tok.vocab_size))
        path = work / f"{spec}_base.pth"
        save_checkpoint(path, model.state_dict(), model.config, tok, {"stage": "full_sft", "step": 0})
        return path, f"{spec} ({model.num_parameters() / 1e6:.0f}M, random)"
    kind, path = find_model(layout.out_dir(), spec)
    if kind != "pth":
        raise UserError(f"--models {spec}: give a preset or a TinyMind .pth (this is a {kind})")
    return path, Path(path).stem


def run(base, dtype, out, args):
    rows, _ = train_lora_run(base, out, args.steps, args.batch_size, ["--dtype", dtype, "--val_ratio", "0.05"])
    train = [r for r in rows if "loss" in r]
    val = [r["val_loss"] for r in rows if "val_loss" in r][-1]            # after the last step
    return [r["loss"] for r in train], val, statistics.median(r["tok_per_s"] for r in train[1:])


def main():
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="small,smollm2", help="comma-separated presets or .pth models")
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    ap.add_argument("--batch_size", type=int, default=16, help="the trainer's --batch_size (README default 16)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per precision, alternating")
    args = ap.parse_args()
    if args.steps < 3:
        raise UserError("--steps: at least 3 (the first step is left out of the rate)")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for spec in args.models.split(","):
            base, label = base_for(spec, work)
            curves, vals, rates = {}, {}, {d: [] for d in DTYPES}
            for i in range(args.repeats):
                for d in DTYPES:
                    curves[d], vals[d], rate = run(base, d, work / f"run_{d}_{i}", args)
                    rates[d].append(rate)
            results.append((label, curves, vals, {d: max(r) for d, r in rates.items()}))
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__} "
          f"({torch.backends.cpu.get_cpu_capability()} kernels), AVX512-BF16/AMX: "
          f"{'yes' if cpu_has_bf16() else 'no'}; LoRA r=8 on all projections, batch {args.batch_size}, "
          f"{args.steps} steps of dataset/music.jsonl, best of {args.repeats} runs per precision")
    print()
    print(f"| {'model':<24} | {'float32 tok/s':>13} | {'bfloat16 tok/s':>14} | {'speed-up':>8} | "
          f"{'train loss gap mean / max':>25} | {'val loss f32 / bf16':>19} |")
    print(f"|{'-' * 26}|{'-' * 14}:|{'-' * 15}:|{'-' * 9}:|{'-' * 26}:|{'-' * 20}:|")
    for label, curves, vals, best in results:
        gaps = [abs(x - y) / x for x, y in zip(curves["float32"], curves["bfloat16"])]
        print(f"| {label:<24} | {best['float32']:>13,.0f} | {best['bfloat16']:>14,.0f} | "
              f"{best['bfloat16'] / best['float32']:>7.2f}x | "
              f"{f'{100 * statistics.mean(gaps):.2f}% / {100 * max(gaps):.2f}%':>25} | "
              f"{vals['float32']:>10.4f} / {vals['bfloat16']:.4f} |")
    print("\ntrain loss gap: |bfloat16 - float32| / float32 per step (each step's own batch, the same in both "
          "runs); val loss: after the last step, on the 5% held out of the data")
    for label, curves, _, _ in results:
        print(f"\nloss per step, {label}: float32 / bfloat16")
        print("  " + "  ".join(f"{i + 1}: {x:.3f}/{y:.3f}" for i, (x, y) in
                              enumerate(zip(curves["float32"], curves["bfloat16"]))))


if __name__ == "__main__":
    run_cli(main)
