"""Benchmark: LoRA time per epoch with dynamic padding vs padding every sample to max_seq_len.

    python scripts/bench_train.py                        # small preset, identity + music mix, CPU
    python scripts/bench_train.py --preset tiny --steps 20 --device cuda

Runs the training loop's own step (trainer.loop.accumulate_gradients + AdamW over the LoRA parameters,
dataset.lm_dataset.collate_chat) on the identity + music mix from dataset/ (or a generated mix when those
files are missing): the same shuffled batches, padded both ways, the two modes alternating step by step so
a busy machine slows both alike. The mean step time times the steps of one epoch is the time per epoch.
The base is freshly initialised (speed does not depend on its weights). Target: >= 3x for dynamic padding.
"""
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from core.cli import ArgumentParser
from checkpoint.layout import repo_root
from dataset.lm_dataset import ChatDataset, collate_chat, read_records
from model.config import get_preset
from model.lora import LoRAConfig, apply_lora
from model.model import TinyMindForCausalLM
from tokenizer.tokenizer import load_default_tokenizer
from trainer.args import TrainConfig
from trainer.components import make_optimizer
from trainer.distributed import Dist
from trainer.step import accumulate_gradients


def make_mix(folder):
    """identity + music from dataset/ (one line each, as shipped), else a generated mix of similar lengths."""
    mix, sources = Path(folder) / "mix.jsonl", []
    lines = []
    for name in ("identity.jsonl", "music.jsonl"):
        p = repo_root() / "dataset" / name
        if p.exists():
            lines += [x for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]
            sources.append(f"dataset/{name}")
    if not lines:
        rng = random.Random(0)
        words = "who are you I am TinyMind a small assistant music chord scale tempo melody guitar".split()
        for _ in range(2000):
            q = " ".join(rng.choice(words) for _ in range(rng.randint(4, 16)))
            a = " ".join(rng.choice(words) for _ in range(rng.randint(10, 80)))
            lines.append(json.dumps({"conversations": [{"role": "user", "content": q},
                                                       {"role": "assistant", "content": a}]}))
        sources.append("generated mix")
    mix.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return mix, len(lines), " + ".join(sources)


def main(argv=None):
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small", help="model preset of the base")
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps measured per padding mode")
    ap.add_argument("--batch_size", type=int, default=16, help="samples per step")
    ap.add_argument("--max_seq_len", type=int, default=512, help="padding length of the static mode")
    ap.add_argument("--device", default="", help="cpu or cuda (default: cuda when available)")
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        data, n, sources = make_mix(tmp)
        records, _ = read_records(data, "chat")
    tok = load_default_tokenizer()
    ds = ChatDataset([r["conversations"] for _, r in records], tok, args.max_seq_len)
    torch.manual_seed(0)
    model = TinyMindForCausalLM(get_preset(args.preset, vocab_size=tok.vocab_size))
    apply_lora(model, LoRAConfig())
    model.to(device).train()
    optimizer = make_optimizer(model, TrainConfig(), device)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    dist = Dist(device=device)
    modes = {"max_length": args.max_seq_len, "dynamic": None}
    times, tokens = {m: [] for m in modes}, {m: 0 for m in modes}
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0)).tolist()
    # the two modes alternate step by step on the same batches, so a busy machine slows both alike
    for i in range(args.steps + 1):                       # step 0 warms up and is not timed
        idx = order[(i * args.batch_size) % len(ds):][:args.batch_size]
        for mode in (modes if i % 2 else reversed(list(modes))):
            batch = collate_chat([ds[j] for j in idx], tok.pad_id, pad_to=modes[mode])
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            accumulate_gradients(model, [batch], dist, scaler)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i:
                times[mode].append(time.perf_counter() - t)
                tokens[mode] += int(batch["attention_mask"].sum())

    steps_per_epoch = math.ceil(n / args.batch_size)
    cpu = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads"
    machine = torch.cuda.get_device_name() if device.type == "cuda" else cpu
    print(f"command: python scripts/bench_train.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print(f"machine: {machine}; torch {torch.__version__}; device {device}")
    print(f"data: {sources}, {n} samples ({statistics.mean(len(x) for x, _ in ds.samples):.0f} tokens on average), "
          f"batch {args.batch_size}, {steps_per_epoch} steps/epoch; preset {args.preset}, LoRA r=8 on all 7 "
          f"targets; {args.steps} steps per mode, alternating\n")
    print("| padding              | s/step | time/epoch | real tok/s |")
    print("|----------------------|--------|------------|------------|")
    for mode, label in (("max_length", f"to max_seq_len {args.max_seq_len}"), ("dynamic", "dynamic (batch max)")):
        t = statistics.mean(times[mode])
        print(f"| {label:<20} | {t:6.2f} | {t * steps_per_epoch:8.0f} s | {tokens[mode] / sum(times[mode]):10,.0f} |")
    speedup = statistics.mean(times["max_length"]) / statistics.mean(times["dynamic"])
    print(f"\nspeed-up of dynamic padding: {speedup:.1f}x (target >= 3x)")


if __name__ == "__main__":
    main()
