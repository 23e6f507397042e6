"""Make preference pairs (DPO data) from a model's own answers, judged by the strict scorers.

    python scripts/make_pairs.py --model smollm2 --data dataset/music.jsonl -o out/data/music_pairs.jsonl
    python scripts/make_pairs.py --model lora_music --data dataset/music.jsonl --data dataset/identity.jsonl --n 6
    python scripts/make_pairs.py --model out/full_sft_512.pth --data my_qa.jsonl --temperature 1.0

The model (any TinyMind loads: a name in out/, a .pth, a .gguf, a Hugging Face folder) answers every question
of --data that can be checked (gold "answers", or an identity question) --n times, sampled; each question with
a failing answer gives one pair {"prompt", "chosen", "rejected"} (chosen: a passing answer, else the record's
reference answer), which trainer/train_dpo.py reads. Questions of the test sets (--exclude; default every
dataset/*_test.jsonl) are left out. Black-box distillation: give a teacher as --model and train on its chosen
answers. The work is evaluation/pairs.py.
"""
import sys
from pathlib import Path

from checkpoint import layout
from core.atomic import write_text
from core.cli import ArgumentParser, check_device, check_range, run_cli
from core.ownership import check_outputs, owning
from dataset.formats import dumps
from evaluation.answer_tests import read_numbered
from evaluation.pairs import make_pairs, questions_asked_by
from inference.load import find_model, load_model_spec
from inference.precision import PRECISIONS

DEFAULT_TESTS = sorted((layout.repo_root() / "dataset").glob("*_test.jsonl"))


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the model that answers: a name in out/ (smollm2, full_sft, an "
                   "adapter name), a .pth, a .gguf or a Hugging Face folder")
    p.add_argument("--data", action="append", default=None, metavar="FILE",
                   help="question JSONL (repeatable; default dataset/music.jsonl)")
    p.add_argument("-o", "--output", default=None, help="the pairs JSONL (default out/data/pairs.jsonl)")
    p.add_argument("--exclude", action="append", default=None, metavar="FILE",
                   help="test files whose questions are left out (repeatable; default dataset/*_test.jsonl)")
    p.add_argument("--n", type=int, default=4, help="sampled answers per question")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top_p", type=float, default=0.95)
    p.add_argument("--max_new_tokens", type=int, default=160)
    p.add_argument("--seed", type=int, default=0, help="answer k of question i is sampled with seed + n * i + k")
    p.add_argument("--batch_size", type=int, default=16, help="answers decoded together")
    p.add_argument("--out_dir", default=None, help="where model names are looked up (default: $TINYMIND_OUT_DIR, "
                   "else <repo>/out)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1")
    p.add_argument("--dtype", choices=PRECISIONS, default="float32")
    args = p.parse_args(argv)
    check_range("--n", args.n, 2, 64, integer=True)
    check_range("--temperature", args.temperature, 0.0, 5.0, low_open=True)
    check_range("--top_p", args.top_p, 0.0, 1.0, low_open=True)
    check_range("--max_new_tokens", args.max_new_tokens, 1, 4096, integer=True)
    check_range("--batch_size", args.batch_size, 1, 4096, integer=True)
    check_range("--seed", args.seed, 0, 2**31 - 1, integer=True)
    check_device(args.device)
    return args


def read_questions(files):
    """The records of every --data file, each with "_where" (file:line, as the pairs name their source)."""
    records = []
    for f in files:
        path = layout.resolve_input(f)
        shown = path.resolve().relative_to(layout.repo_root()) if layout.within(layout.repo_root(), path.resolve()) \
            else path
        records += [{**rec, "_where": f"{shown}:{n}"} for n, rec in read_numbered(path)]
    return records


def main(argv=None):
    args = parse_args(argv)
    out = layout.out_dir(args.out_dir)
    data = args.data or [str(layout.repo_root() / "dataset" / "music.jsonl")]
    tests = args.exclude if args.exclude is not None else [str(t) for t in DEFAULT_TESTS]
    output = Path(args.output) if args.output else layout.data_path(out, "pairs.jsonl")
    kind, model_path = find_model(out, args.model)                   # a missing model: one line, before any work
    check_outputs([("--output", output)], [("--data", d) for d in data] + [("--exclude", t) for t in tests]
                  + [("--model", model_path)])
    records = read_questions(data)                                   # every file read and checked first
    held = questions_asked_by([r for t in tests for _, r in read_numbered(t)])
    with owning(output, "writing pairs to"):
        loaded = load_model_spec(args.model, out, device=args.device, dtype=args.dtype)
        print(f"{loaded.label} answers {len(records):,} records of {', '.join(data)} ({args.n} samples each, "
              f"temperature {args.temperature:g}, top_p {args.top_p:g})", file=sys.stderr)
        sampling = {"temperature": args.temperature, "top_p": args.top_p, "max_new_tokens": args.max_new_tokens}
        pairs, counts = make_pairs(loaded, records, args.n, sampling, args.seed, held, args.batch_size)
        write_text(output, "".join(dumps(p) + "\n" for p in pairs))
    print(f"{len(pairs):,} pairs -> {output}")
    for why, k in sorted(counts.items()):
        print(f"  {k:,} questions: {why}")
    if not pairs:
        print("no pair: every answer passed or nothing could be checked; raise --n or --temperature", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
