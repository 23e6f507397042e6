"""DPO training speed on CPU: TinyMind's train_dpo step vs TRL's DPOTrainer, same model, pairs and batch.

The model is the imported SmolLM2-135M-Instruct (out/smollm2_135m.pth; --ckpt another), as TinyMind holds it
and as transformers' LlamaForCausalLM on the same weights for TRL. The pairs are the first ones of --data
(default dataset/music_pairs.jsonl), tokenized once by TinyMind's chat template and fed to both as the same
padded batch (chosen rows then rejected rows; TRL's completion_mask = TinyMind's answer labels). Each step:
the policy's forward and backward over the pairs, the reference's forward (full fine-tuning: a frozen copy;
--lora: the adapters switched off, PEFT's disable_adapter in TRL), sigmoid DPO, AdamW. Warm-up steps, then
timed steps taken in turns (median). Prints the command, the machine and a table.

    python scripts/bench_dpo.py                         # full fine-tuning, 4 pairs a step
    python scripts/bench_dpo.py --lora --batch_size 8 --dtype bfloat16
"""
import copy
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import warnings

import torch

from bench.common import cpu_name
from checkpoint import layout
from checkpoint.pth import load_checkpoint, model_from_checkpoint
from core.cli import ArgumentParser, check_range, run_cli
from core.errors import UserError
from interop.hf import export_hf
from dataset.preference import PreferenceDataset, collate_pairs, iter_pairs
from model.lora import DEFAULT_TARGETS, LoRAConfig, apply_lora
from trainer.distributed import Dist
from trainer.preference import PreferenceLoss, PreferenceObjective, Reference


class TinyMindStep:
    def __init__(self, model, lora, dtype, beta):
        self.model = model.train()
        self.objective = PreferenceObjective(PreferenceLoss("sigmoid", beta), "adapter_off" if lora else "copy")
        self.objective.reference = Reference(model, self.objective.kind, dtype, precompute=False)
        self.autocast = torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32)
        self.scaler = torch.amp.GradScaler("cpu", enabled=False)
        self.opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)

    def __call__(self, batch):
        self.objective.accumulate(self.model, [batch], Dist(), self.scaler, self.autocast)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


class TRLStep:
    def __init__(self, hf_dir, lora, dtype, beta, tmp):
        import trl                                    # optional (requirements-dev.txt), seconds of start-up
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer
        hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).train()
        ref = None if lora else copy.deepcopy(hf).eval()
        if lora:
            from peft import LoraConfig, get_peft_model
            hf = get_peft_model(hf, LoraConfig(r=lora.r, lora_alpha=lora.alpha, target_modules=list(lora.targets)))
        args = trl.DPOConfig(output_dir=str(tmp), loss_type=["sigmoid"], beta=beta, report_to=[], use_cpu=True,
                             bf16=dtype == torch.bfloat16, precompute_ref_log_probs=False, learning_rate=1e-6)
        self.trainer = trl.DPOTrainer(model=hf, ref_model=ref, args=args,
                                      processing_class=AutoTokenizer.from_pretrained(hf_dir),
                                      train_dataset=Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}]))
        self.model = self.trainer.model.train()
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=1e-6)
        self.autocast = torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32)

    def __call__(self, batch):
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                  "completion_mask": (batch["labels"] != -100).long()}
        with self.autocast:
            loss = self.trainer._compute_loss(self.model, inputs, False)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def parse_args():
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", default=None, help="the model (default out/smollm2_135m.pth: "
                   "python scripts/convert_model.py --smollm2)")
    p.add_argument("--data", default=str(layout.repo_root() / "dataset" / "music_pairs.jsonl"), help="preference pairs")
    p.add_argument("--batch_size", type=int, default=4, help="pairs a step")
    p.add_argument("--max_seq_len", type=int, default=512)
    p.add_argument("--steps", type=int, default=5, help="timed steps of each")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--lora", action="store_true", help="a LoRA (rank 8 on all seven projections) instead of full")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = every available core")
    args = p.parse_args()
    for flag, low in (("--batch_size", 1), ("--steps", 1), ("--warmup", 0), ("--max_seq_len", 8), ("--threads", 0)):
        check_range(flag, getattr(args, flag[2:]), low, 10**6, integer=True)
    return args


def load(args):
    """(TinyMind model, its batches of pairs): the same tensors for both implementations."""
    path = layout.resolve_input(args.ckpt) if args.ckpt else layout.smollm2_path(layout.out_dir())
    if not path.is_file():
        raise UserError(f"{path}: not found; `python scripts/convert_model.py --smollm2` imports SmolLM2, or give --ckpt")
    model, tok = model_from_checkpoint(load_checkpoint(path), where=str(path))
    need = args.batch_size * (args.steps + args.warmup)
    records = [r for _, r in zip(range(need), (rec for _, rec in iter_pairs(args.data)))]
    if len(records) < need:
        raise UserError(f"{args.data}: {len(records)} pairs, {need} needed (--batch_size x (--steps + --warmup))")
    ds = PreferenceDataset(records, tok, args.max_seq_len)
    batches = [collate_pairs([ds[i] for i in range(s, s + args.batch_size)], pad_id=tok.pad_id)
               for s in range(0, len(ds) - args.batch_size + 1, args.batch_size)]
    return model, batches, path


def main():
    args = parse_args()
    warnings.filterwarnings("ignore")
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    dtype = getattr(torch, args.dtype)
    model, batches, path = load(args)
    lora = LoRAConfig(r=8, alpha=16, targets=DEFAULT_TARGETS) if args.lora else None
    import trl                      # optional (requirements-dev.txt), seconds of start-up that --help does without
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv))
    print(f"machine: {cpu_name()}, {threads} threads, torch {torch.__version__}, trl {trl.__version__}, python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at start")
    tokens = [int(b["attention_mask"].sum()) for b in batches]
    print(f"model: {path.name}; {'LoRA r=8 on all seven projections' if lora else 'full fine-tuning'}; "
          f"{args.batch_size} pairs a step ({statistics.mean(tokens):,.0f} real tokens on average), {args.dtype}, "
          f"sigmoid DPO beta 0.1, AdamW; {args.warmup} warm-up + {args.steps} timed steps each, in turns\n")
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = export_hf(path, os.path.join(tmp, "hf"))          # transformers' model of the same weights
        if lora:
            apply_lora(model, lora)
        runs = [("TRL 1.16 DPOTrainer", TRLStep(hf_dir, lora, dtype, 0.1, tmp)),
                ("TinyMind train_dpo", TinyMindStep(model, lora, dtype, 0.1))]
        times = {name: [] for name, _ in runs}
        for i, batch in enumerate(batches):
            for name, step in runs:
                t0 = time.perf_counter()
                step(batch)
                if i >= args.warmup:
                    times[name].append(time.perf_counter() - t0)
    print(f"load average {os.getloadavg()[0]:.1f} at the end\n")
    ref = None
    print("| implementation | s/step | pairs/s | tokens/s | vs TRL |\n|---|---:|---:|---:|---:|")
    for name, _ in runs:
        step_s = statistics.median(times[name])
        ref = ref or step_s
        print(f"| {name} | {step_s:.2f} | {args.batch_size / step_s:.2f} | "
              f"{statistics.mean(tokens[args.warmup:]) / step_s:,.0f} | {ref / step_s:.2f}x |")


if __name__ == "__main__":
    run_cli(main)
