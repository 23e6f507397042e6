"""Make the synthetic arithmetic task of GRPO: seeded problems with exact answers, a held-out split apart.

    python scripts/make_arithmetic.py                                   # the shipped files (below)
    python scripts/make_arithmetic.py --levels 2,3 --n 4000 -o out/data/arith.jsonl
    python scripts/make_arithmetic.py --split test --levels 1,2 --n 200 -o out/data/arith_test.jsonl

Without -o it writes dataset/arithmetic.jsonl (--n training problems) and dataset/arithmetic_test.jsonl
(--n_test held-out ones). A problem's split is fixed by its text's hash (one in ten held out), so no
training file made here ever holds a test problem. Levels (dataset/arithmetic.py): 1 a + b one-digit,
2 a + b / a - b two-digit, 3 a x b, 4 three numbers.
"""
import json
from pathlib import Path

from checkpoint import layout
from core.atomic import write_text
from core.cli import ArgumentParser, check_range, run_cli
from core.errors import UserError
from core.ownership import check_outputs
from dataset.arithmetic import LEVELS, make_problems


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--levels", default="2", help="comma list of difficulty levels, mixed in turn: " +
                   "; ".join(f"{k} {v}" for k, v in LEVELS.items()))
    p.add_argument("--n", type=int, default=2000, help="training problems (or, with --split test and -o, test ones)")
    p.add_argument("--n_test", type=int, default=200, help="held-out problems (without -o)")
    p.add_argument("--split", choices=("train", "test"), default="train", help="with -o: which split to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", default=None, help="one file of --split (default: both shipped files)")
    args = p.parse_args(argv)
    try:
        args.levels = tuple(int(x) for x in args.levels.split(","))
    except ValueError:
        raise UserError(f"--levels {args.levels}: a comma list of numbers among {sorted(LEVELS)}") from None
    if not args.levels or any(x not in LEVELS for x in args.levels):
        raise UserError(f"--levels {','.join(map(str, args.levels))}: use levels among {sorted(LEVELS)}")
    check_range("--n", args.n, 1, 10**7, integer=True)
    check_range("--n_test", args.n_test, 1, 10**7, integer=True)
    check_range("--seed", args.seed, 0, 2**31 - 1, integer=True)
    return args


def main(argv=None):
    args = parse_args(argv)
    dataset = layout.repo_root() / "dataset"
    jobs = [(Path(args.output), args.split, args.n)] if args.output else \
        [(dataset / "arithmetic.jsonl", "train", args.n), (dataset / "arithmetic_test.jsonl", "test", args.n_test)]
    check_outputs([("-o", path) for path, _, _ in jobs], [])
    for path, split, n in jobs:
        records = make_problems(n, args.levels, split, args.seed)
        write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        print(f"{path}: {len(records):,} {split} problems, levels {','.join(map(str, args.levels))}"
              + (f" (fewer than {n}: every distinct one)" if len(records) < n else ""))


if __name__ == "__main__":
    run_cli(main)
