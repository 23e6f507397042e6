"""GRPO speed on CPU: rollouts through THE decoding batch against one sequence at a time, a GRPO step's time
split (rollout, reference, update), and TinyMind's step against TRL's GRPOTrainer on the same model, prompts
and settings.

The model is the imported SmolLM2-135M-Instruct (out/smollm2_135m.pth; --ckpt another), as TinyMind holds it
and as transformers' LlamaForCausalLM on the same weights (PEFT LoRA) for TRL. The prompts are the first of
dataset/arithmetic.jsonl (--data). Rollouts: --prompts prompts x --num_generations completions of at most
--max_new_tokens tokens at --temperature, three ways: the batch with each group sharing its prompt's prefill
(what trainer/train_grpo.py does), the batch with a prefill per row, and each completion alone. GRPO steps:
LoRA r=8 on all seven projections, dapo loss, beta --beta (the reference: adapters off on both), AdamW,
arithmetic reward; TRL 1.16 samples with transformers' generate. Warm-up steps, then timed ones (median).

    python scripts/bench_grpo.py
    python scripts/bench_grpo.py --prompts 2 --num_generations 8 --max_new_tokens 64 --steps 3
"""
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
from dataset.formats import iter_jsonl
from interop.hf import export_hf
from model.lora import DEFAULT_TARGETS, LoRAConfig, apply_lora
from rewards.functions import RewardSet
from trainer.distributed import Dist
from trainer.grpo import PolicyLoss
from trainer.grpo_objective import GRPOObjective, Settings
from trainer.rollout import PromptSet, sample_groups


def rollouts(model, tok, ids, G, max_new, temperature):
    """-> [(way, generated tokens, seconds)] for the three ways of sampling the same rows."""
    out, seeds = [], list(range(len(ids) * G))
    for way in ("batch, a group shares its prefill", "batch, a prefill per row", "one completion at a time"):
        t0 = time.perf_counter()
        if way.startswith("batch, a group"):
            groups = [sample_groups(model, ids, G, max_new, temperature, tok.stop_ids, tok.pad_id, seeds)]
        elif way.startswith("batch"):
            groups = [sample_groups(model, [p for p in ids for _ in range(G)], 1, max_new, temperature,
                                    tok.stop_ids, tok.pad_id, seeds)]
        else:
            groups = [sample_groups(model, [ids[r // G]], 1, max_new, temperature, tok.stop_ids, tok.pad_id, [r])
                      for r in seeds]
        seconds = time.perf_counter() - t0
        out.append((way, sum(len(c) for g in groups for c in g.completion_ids), seconds))
    return out


class TinyMindGRPO:
    def __init__(self, model, tok, records, args):
        self.model = model.train()
        settings = Settings(args.num_generations, args.max_new_tokens, args.temperature, "group", 1, False,
                            "adapter_off", 0)
        self.objective = GRPOObjective(RewardSet(["arithmetic"]), settings,
                                       PolicyLoss("dapo", args.beta, 0.2, 0.2, args.max_new_tokens), tok)
        self.objective.prepare(None, model, None, None, None, torch.float32, None)
        data = PromptSet(records, tok, model.config.max_position_embeddings, args.max_new_tokens)
        self.batches = [[data[i] for i in range(s, s + args.prompts)] for s in range(0, len(data), args.prompts)]
        self.opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        self.split = []

    def __call__(self, i):
        _, _, m = self.objective.accumulate(self.model, [self.batches[i]], Dist(), torch.amp.GradScaler("cpu", enabled=False),
                                            torch.autocast("cpu", enabled=False))
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        n = len(self.batches[i]) * self.objective.s.num_generations
        self.split.append({k: m.get(k, 0.0) / n for k in ("rollout_s", "reference_s", "update_s", "completion_length")})


class TRLGRPO:
    """TRL's GRPOTrainer.train() over the same prompts; each step's time from a callback."""

    def __init__(self, hf_dir, records, args, tmp):
        import trl                                    # optional (requirements-dev.txt)
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

        def arithmetic(prompts, completions, answers, operands, **kw):
            texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
            return RewardSet(["arithmetic"])(texts, [{"answers": a, "operands": o} for a, o in zip(answers, operands)])[0].tolist()
        stamps = self.stamps = []

        class Clock(TrainerCallback):
            def on_step_end(self, *a, **k):
                stamps.append(time.perf_counter())
        n = args.prompts * args.num_generations
        cfg = trl.GRPOConfig(output_dir=str(tmp), per_device_train_batch_size=n, num_generations=args.num_generations,
                             max_completion_length=args.max_new_tokens, temperature=args.temperature, beta=args.beta,
                             loss_type="dapo", learning_rate=1e-5, max_steps=args.steps + args.warmup, report_to=[],
                             use_cpu=True, bf16=False, fp16=False, save_strategy="no", logging_steps=1000,
                             shuffle_dataset=False, disable_tqdm=True)
        data = Dataset.from_list([{"prompt": r["conversations"], "answers": r["answers"], "operands": r["operands"]}
                                  for r in records])
        self.trainer = trl.GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32),
                                       reward_funcs=arithmetic, args=cfg, train_dataset=data,
                                       processing_class=AutoTokenizer.from_pretrained(hf_dir), callbacks=[Clock()],
                                       peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=list(DEFAULT_TARGETS)))

    def run(self):
        start = time.perf_counter()
        self.trainer.train()
        ends = [start] + self.stamps
        return [b - a for a, b in zip(ends, ends[1:])]


def parse_args():
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", default=None, help="the model (default out/smollm2_135m.pth)")
    p.add_argument("--data", default=str(layout.repo_root() / "dataset" / "arithmetic.jsonl"))
    p.add_argument("--prompts", type=int, default=2, help="prompts a step")
    p.add_argument("--num_generations", type=int, default=8)
    p.add_argument("--max_new_tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--beta", type=float, default=0.04, help="KL weight (0: no reference forward)")
    p.add_argument("--steps", type=int, default=3, help="timed GRPO steps of each")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = every available core")
    args = p.parse_args()
    for flag, low in (("--prompts", 1), ("--num_generations", 2), ("--max_new_tokens", 1), ("--steps", 1),
                      ("--warmup", 0), ("--threads", 0)):
        check_range(flag, getattr(args, flag[2:]), low, 10**6, integer=True)
    return args


def main():
    args = parse_args()
    warnings.filterwarnings("ignore")
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    path = layout.resolve_input(args.ckpt) if args.ckpt else layout.smollm2_path(layout.out_dir())
    if not path.is_file():
        raise UserError(f"{path}: not found; `python scripts/convert_model.py --smollm2` imports SmolLM2, or give --ckpt")
    model, tok = model_from_checkpoint(load_checkpoint(path), where=str(path))
    need = args.prompts * (args.steps + args.warmup)
    records = [r for _, (_, r) in zip(range(need), iter_jsonl(args.data, kind="prompt"))]
    import trl
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv))
    print(f"machine: {cpu_name()}, {threads} threads, torch {torch.__version__}, trl {trl.__version__}, python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at start")
    print(f"model: {path.name}, float32; {args.prompts} prompts x {args.num_generations} completions of at most "
          f"{args.max_new_tokens} tokens, temperature {args.temperature:g}\n")
    ids = PromptSet(records[:args.prompts], tok, model.config.max_position_embeddings, args.max_new_tokens).samples
    rolls = rollouts(model.eval(), tok, ids, args.num_generations, args.max_new_tokens, args.temperature)
    print("| rollout | tokens | s | tokens/s | vs one at a time |\n|---|---:|---:|---:|---:|")
    one = rolls[-1][1] / rolls[-1][2]
    for way, n, s in rolls:
        print(f"| {way} | {n} | {s:.1f} | {n / s:.1f} | {n / s / one:.2f}x |")
    apply_lora(model, LoRAConfig(r=8, alpha=16, targets=DEFAULT_TARGETS))
    ours = TinyMindGRPO(model, tok, records, args)
    mine = []
    for i in range(args.steps + args.warmup):
        t0 = time.perf_counter()
        ours(i)
        mine.append(time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = export_hf(path, os.path.join(tmp, "hf"))
        theirs = TRLGRPO(hf_dir, records, args, tmp).run()
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end\n")
    split = {k: statistics.median(s[k] for s in ours.split[args.warmup:]) for k in ours.split[0]}
    print("| GRPO step (LoRA r=8, dapo, beta %g) | s/step | steps/s | vs TRL |\n|---|---:|---:|---:|" % args.beta)
    trl_s, our_s = statistics.median(theirs[args.warmup:]), statistics.median(mine[args.warmup:])
    print(f"| TRL 1.16 GRPOTrainer | {trl_s:.1f} | {1 / trl_s:.3f} | 1.00x |")
    print(f"| TinyMind train_grpo | {our_s:.1f} | {1 / our_s:.3f} | {trl_s / our_s:.2f}x |")
    print(f"\nTinyMind's step, split (median): rollout {split['rollout_s']:.1f} s, reference {split['reference_s']:.1f} s, "
          f"update {split['update_s']:.1f} s; completions of {split['completion_length']:.0f} tokens on average")


if __name__ == "__main__":
    run_cli(main)
