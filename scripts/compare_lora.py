"""Compare a LoRA adapter with its base in one command: base, adapter, and adapter + retrieval side by side.

    python scripts/compare_lora.py --lora_name lora_music
    python scripts/compare_lora.py --lora_name lora_music --tasks music_known,music_test --limit 20
    python scripts/compare_lora.py --lora_name lora_music --bench arc_easy,hellaswag --bench_limit 200

Held-out music questions the training data does not hold (dataset/music_known_test.jsonl), the identity test
(dataset/identity_test.jsonl) and general knowledge (dataset/general_test.jsonl), answered greedily by the
adapter's base, by the adapter, and by the adapter with passages of its knowledge base (the one it records, else
dataset/knowledge/music; --docs another) in each prompt; --bench adds benchmarks scored as lm-eval does
(python scripts/eval_bench.py --fetch first), so what the adapter forgot shows in the same table. Each answer is
correct, unsure (says it is not sure) or wrong and confident. The table: out/eval/compare_{lora_name}.md; every
answer and verdict: out/eval/compare_{lora_name}.json (evaluation/compare.py does the work).
"""
import shlex
import sys

import torch

from checkpoint import layout
from core.cli import ArgumentParser, check_device, check_range, run_cli
from evaluation.benchmarks import TASKS
from evaluation.compare import DEFAULT_SETS, SETS, plan_comparison, run_comparison, split_names
from inference.precision import PRECISIONS


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lora_name", required=True, help="the adapter out/lora/{lora_name}_{hidden}.pth (e.g. lora_music)")
    p.add_argument("--tasks", default=",".join(DEFAULT_SETS),
                   help=f"question sets, comma-separated: {', '.join(SETS)} (default %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="answer only the first N questions of each set")
    p.add_argument("--bench", default="", help="benchmarks too, comma-separated (arc_easy,hellaswag; "
                                                f"known: {', '.join(TASKS)})")
    p.add_argument("--bench_limit", type=int, default=None, help="score only the first N items of each benchmark")
    p.add_argument("--docs", default=None, metavar="DIR",
                   help="the retrieval arm's documents (default: the knowledge base the adapter records, else "
                        "dataset/knowledge/music)")
    p.add_argument("--docs_k", type=int, default=3, help="passages per question in the retrieval arm (default 3)")
    p.add_argument("--batch_size", type=int, default=16, help="questions answered together (default 16)")
    p.add_argument("--max_new_tokens", type=int, default=64, help="the longest answer, in tokens (default 64)")
    p.add_argument("--hidden_size", type=int, default=None, help="picks out/lora/{lora_name}_{hidden}.pth")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1")
    p.add_argument("--dtype", choices=PRECISIONS, default="float32", help="precision of both models (default float32)")
    p.add_argument("--out_dir", default=None, help="where the models are and out/eval/ goes (default "
                                                   "$TINYMIND_OUT_DIR, else <repo>/out)")
    args = p.parse_args(argv)
    check_device(args.device)
    args.sets = split_names(args.tasks, SETS, "--tasks")
    args.bench_tasks = split_names(args.bench, TASKS, "--bench") if args.bench else []
    for flag, high in (("limit", None), ("bench_limit", None), ("batch_size", 4096), ("max_new_tokens", 4096),
                       ("docs_k", 50), ("hidden_size", None)):
        if getattr(args, flag) is not None:
            check_range(f"--{flag}", getattr(args, flag), 1, high, integer=True)
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    plan = plan_comparison(args.lora_name, layout.out_dir(args.out_dir), args.sets, args.limit, args.docs,
                           args.docs_k, args.bench_tasks, args.bench_limit, args.hidden_size,
                           batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, device=args.device,
                           dtype=args.dtype)
    run_comparison(plan, shlex.join(["python", "scripts/compare_lora.py", *argv]))
    return 0


if __name__ == "__main__":
    run_cli(main)
