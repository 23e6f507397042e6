"""LoRA training speed on CPU: TinyMind's LoRALinear vs transformers' LlamaForCausalLM + peft LoRA.

Both models have the same shapes (the `small` preset unless --preset), the same LoRA (rank, alpha, all
seven projections), the same batch of random tokens and AdamW over the trainable parameters only; a few
warm-up steps, then timed steps. Prints the command, the machine and a table.

    python scripts/bench_lora.py                          # small preset, batch 8 x 256, all threads
    python scripts/bench_lora.py --steps 5 --threads 2
"""
import os
import platform
import shlex
import statistics
import sys
import time
import warnings


import torch

from model.config import get_preset
from core.errors import UserError
from core.cli import ArgumentParser, run_cli
from interop.hf import hf_config_dict
from model.lora import DEFAULT_TARGETS, LoRAConfig, apply_lora, count_parameters
from model.model import TinyMindForCausalLM
from bench.common import cpu_name


def build_tinymind(config, lora):
    model = TinyMindForCausalLM(config)
    apply_lora(model, lora)
    return model


def build_peft(config, lora):
    from peft import LoraConfig, get_peft_model                 # optional (requirements-dev.txt), 8 s of start-up
    from transformers import LlamaConfig, LlamaForCausalLM      # optional (requirements-dev.txt), 2 s of start-up
    # the same shapes through the exporter's config mapping
    hf_config = LlamaConfig(**hf_config_dict(config), attn_implementation="sdpa")
    model = LlamaForCausalLM(hf_config)
    peft_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=list(lora.targets), use_rslora=lora.use_rslora, bias="none")
    return get_peft_model(model, peft_config)


class Trainer:
    """One model with AdamW over its trainable parameters; step() returns the seconds one step took."""

    def __init__(self, model, batch, compiled=False, lr=1e-4):
        self.model = torch.compile(model) if compiled else model
        self.model.train()
        self.opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, foreach=True)
        self.batch = batch
        self.times = []

    def step(self):
        t0 = time.perf_counter()
        loss = self.model(input_ids=self.batch, labels=self.batch).loss
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.times.append(time.perf_counter() - t0)
        return loss.item()


def main():
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="small", help="model preset (model.config.PRESETS)")
    p.add_argument("--steps", type=int, default=8, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--seq_len", type=int, default=256)
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = every available core")
    p.add_argument("--lora_rank", type=int, default=8)
    p.add_argument("--lora_alpha", type=float, default=16)
    p.add_argument("--compile", action="store_true", help="also time TinyMind under torch.compile")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1 or args.seq_len < 2:
        raise UserError("--steps, --batch_size must be >= 1, --warmup >= 0 and --seq_len >= 2")
    warnings.filterwarnings("ignore", category=FutureWarning)   # transformers deprecation notes

    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    config = get_preset(args.preset, vocab_size=6400)
    lora = LoRAConfig(r=args.lora_rank, alpha=args.lora_alpha, targets=DEFAULT_TARGETS)
    g = torch.Generator().manual_seed(args.seed)
    batch = torch.randint(0, config.vocab_size, (args.batch_size, args.seq_len), generator=g)

    import peft                     # optional (requirements-dev.txt), 8 s of start-up that --help does without
    import transformers             # optional (requirements-dev.txt), 2 s of start-up that --help does without
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv))
    print(f"machine: {cpu_name()}, {threads} threads, torch {torch.__version__}, "
          f"transformers {transformers.__version__}, peft {peft.__version__}, python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    print(f"model: preset {args.preset} (hidden {config.hidden_size}, layers {config.num_hidden_layers}, "
          f"heads {config.num_attention_heads}/{config.num_key_value_heads}, intermediate "
          f"{config.intermediate_size}, vocab {config.vocab_size}); LoRA r={lora.r} alpha={lora.alpha:g} on "
          f"{','.join(lora.targets)}; batch {args.batch_size} x {args.seq_len}, float32, AdamW, "
          f"{args.warmup} warm-up + {args.steps} timed steps (median, round-robin)\n")

    runs = [("transformers + peft", build_peft, False), ("TinyMind LoRALinear", build_tinymind, False)]
    if args.compile:
        runs.append(("TinyMind + torch.compile", build_tinymind, True))
    trainers = []
    for name, build, compiled in runs:
        torch.manual_seed(args.seed)
        model = build(config, lora)
        trainers.append((name, count_parameters(model), Trainer(model, batch, compiled)))
        for _ in range(args.warmup):
            trainers[-1][2].step()
        trainers[-1][2].times.clear()
    # round-robin, so a machine that gets busier or quieter during the run affects every row alike
    for _ in range(args.steps):
        for _, _, trainer in trainers:
            trainer.step()

    rows = []
    for name, (trainable, total), trainer in trainers:
        step_s = statistics.median(trainer.times)
        rows.append((name, trainable, total, step_s, batch.numel() / step_s))
    print(f"load average {os.getloadavg()[0]:.1f} at the end\n")
    ref = rows[0][4]
    print(f"| {'implementation':<26} | {'trainable':>9} | {'total':>10} | {'s/step':>7} | {'tokens/s':>9} | "
          f"{'vs peft':>7} |")
    print(f"|{'-' * 28}|{'-' * 10}:|{'-' * 11}:|{'-' * 8}:|{'-' * 10}:|{'-' * 8}:|")
    for name, trainable, total, step_s, tok_s in rows:
        print(f"| {name:<26} | {trainable:>9,} | {total:>10,} | {step_s:>7.3f} | {tok_s:>9,.0f} | "
              f"{tok_s / ref:>6.2f}x |")


if __name__ == "__main__":
    run_cli(main)
