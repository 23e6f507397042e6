"""Speed of the imported SmolLM2-135M-Instruct on CPU: greedy decode tokens/s (KV cache, batch 1) and LoRA
training tokens/s (rank 8 on all seven projections, AdamW over LoRA weights only, small batch).

    python scripts/convert_model.py --smollm2                 # once: writes out/smollm2_135m.pth
    python scripts/bench_smollm2.py                           # prints a table
    python scripts/bench_smollm2.py --threads 2 --batch_size 4 --seq_len 256 --steps 5
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path


import torch

from inference.load import load_for_inference
from checkpoint.layout import out_dir, smollm2_path
from core.errors import UserError
from core.cli import ArgumentParser, run_cli
from inference.generate import generate
from inference.prompt import build_prompt
from model.lora import LoRAConfig, apply_lora
from bench.common import cpu_name


def bench_decode(model, tokenizer, new_tokens, repeats):
    ids = build_prompt(tokenizer, [{"role": "user", "content": "Tell me a long story about a music box."}])
    generate(model, [ids], max_new_tokens=4)                            # warm-up
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = generate(model, [ids], max_new_tokens=new_tokens)[0]      # no stop ids: always new_tokens
        rates.append(len(out) / (time.perf_counter() - t0))
    return len(ids), statistics.median(rates)


def bench_lora(model, batch_size, seq_len, steps, warmup):
    apply_lora(model, LoRAConfig(r=8, alpha=16))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, model.config.vocab_size, (batch_size, seq_len), generator=g)
    times = []
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        loss = model(x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    return trainable, batch_size * seq_len / statistics.median(times), loss.item()


def main():
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=str(smollm2_path(out_dir())))
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--new_tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    args = p.parse_args()
    if not Path(args.ckpt).is_file():
        raise UserError(f"{args.ckpt}: not found; run `python scripts/convert_model.py --smollm2` first")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    loaded = load_for_inference(ckpt=args.ckpt)
    model, tokenizer = loaded.model, loaded.tokenizer
    n_params = model.num_parameters()
    prompt_len, decode = bench_decode(model, tokenizer, args.new_tokens, args.repeats)
    trainable, train, loss = bench_lora(model, args.batch_size, args.seq_len, args.steps, args.warmup)

    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"model:   {args.ckpt} ({n_params / 1e6:.1f}M parameters, float32)")
    rows = [("decode, greedy, batch 1", f"prompt {prompt_len} + {args.new_tokens} new tokens, median of "
             f"{args.repeats}", f"{decode:,.1f}"),
            ("LoRA training step", f"r=8 all projections ({trainable / 1e6:.2f}M trainable), batch "
             f"{args.batch_size} x {args.seq_len}, median of {args.steps}", f"{train:,.0f}")]
    w = [max(len(r[i]) for r in rows + [("what", "setting", "tokens/s")]) for i in range(3)]
    print(f"| {'what':<{w[0]}} | {'setting':<{w[1]}} | {'tokens/s':>{w[2]}} |")
    print(f"|{'-' * (w[0] + 2)}|{'-' * (w[1] + 2)}|{'-' * (w[2] + 1)}:|")
    for r in rows:
        print(f"| {r[0]:<{w[0]}} | {r[1]:<{w[1]}} | {r[2]:>{w[2]}} |")


if __name__ == "__main__":
    run_cli(main)
