"""A model's mean rewards on a prompt file, greedy: the held-out accuracy of a GRPO task, before and after.

    python scripts/eval_rewards.py --model smollm2 --data dataset/arithmetic_test.jsonl
    python scripts/eval_rewards.py --model lora_math --data dataset/arithmetic_test.jsonl --reward arithmetic
    python scripts/eval_rewards.py --model smollm2 --data dataset/music_test.jsonl --reward answer --limit 100

Prints the mean of each reward and writes out/eval/rewards_{data}_{model}.json (with five answers verbatim).
The rewards are trainer/train_grpo.py's (--reward NAME[:weight] or module:function, repeatable); the work
is rewards/evaluate.py.
"""
import json
from pathlib import Path

from checkpoint import layout
from core.atomic import write_text
from core.cli import ArgumentParser, check_device, check_range, run_cli
from core.ownership import check_outputs
from dataset.formats import iter_jsonl
from inference.load import find_model, load_model_spec
from inference.precision import PRECISIONS
from rewards.evaluate import evaluate_rewards
from rewards.functions import RewardSet
from trainer.rollout import prompt_record


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a name in out/ (smollm2, grpo, an adapter name), a .pth, a .gguf "
                   "or a Hugging Face folder")
    p.add_argument("--data", default=str(layout.repo_root() / "dataset" / "arithmetic_test.jsonl"),
                   help="prompt JSONL with the fields the rewards read")
    p.add_argument("--reward", action="append", default=None, help="NAME[:weight] or module:function (repeatable; "
                   "default arithmetic)")
    p.add_argument("--limit", type=int, default=0, help="the first N prompts only (0 = all)")
    p.add_argument("--max_new_tokens", type=int, default=64)
    p.add_argument("--batch_size", type=int, default=32, help="prompts decoded together")
    p.add_argument("-o", "--output", default=None, help="the report (default out/eval/rewards_{data}_{model}.json)")
    p.add_argument("--out_dir", default=None, help="where model names are looked up and reports go")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=PRECISIONS, default="float32")
    args = p.parse_args(argv)
    check_range("--limit", args.limit, 0, 10**9, integer=True)
    check_range("--max_new_tokens", args.max_new_tokens, 1, 4096, integer=True)
    check_range("--batch_size", args.batch_size, 1, 4096, integer=True)
    check_device(args.device)
    return args


def main(argv=None):
    args = parse_args(argv)
    out = layout.out_dir(args.out_dir)
    rewards = RewardSet.parse(args.reward or ["arithmetic"])
    data = layout.resolve_input(args.data)
    _, model_path = find_model(out, args.model)                       # a missing model: one line, before any work
    records = []
    for line, rec in iter_jsonl(str(data), normalize=prompt_record):     # a last assistant turn is left out
        rewards.check_record(rec, f"{data}:{line}")
        records.append(rec)
    records = records[:args.limit or None]
    output = Path(args.output) if args.output else layout.report_path(out, f"rewards_{data.stem}", Path(model_path).stem)
    check_outputs([("--output", output)], [("--data", data), ("--model", model_path)])
    loaded = load_model_spec(args.model, out, device=args.device, dtype=args.dtype)
    report = {"model": loaded.label, "data": str(data), "rewards": rewards.names, "max_new_tokens": args.max_new_tokens,
              **evaluate_rewards(loaded, records, rewards, args.max_new_tokens, args.batch_size)}
    for name, value in report["mean"].items():
        print(f"{loaded.label} on {data.name} ({report['n']} prompts, greedy): {name} {value:.3f}")
    print(f"mean completion {report['completion_length']:.1f} tokens, {report['seconds']} s; report: {output}")
    write_text(output, json.dumps(report, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    run_cli(main)
