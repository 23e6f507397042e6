"""Dataset tools: validate, stats, mix, split, dedupe and shuffle JSONL training data.

    python scripts/prepare_data.py validate dataset/*.jsonl
    python scripts/prepare_data.py stats dataset/sft.jsonl --max_seq_len 512
    python scripts/prepare_data.py mix dataset/music.jsonl:15 dataset/identity.jsonl:4 -o dataset/lora_mix.jsonl
    python scripts/prepare_data.py split my.jsonl --val_ratio 0.05      # -> my_train.jsonl, my_val.jsonl
                                                    # (by unique sample: copies stay on one side)
    python scripts/prepare_data.py dedupe my.jsonl -o my_dedup.jsonl
    python scripts/prepare_data.py shuffle my.jsonl -o my_shuffled.jsonl --seed 42

Every command streams its files line by line, so memory stays flat on a multi-GB file: shuffles go
through seeded random bucket files on disk, deduplication through hash-partitioned bucket files, and
exact-count sampling (fractions, splits) through selection sampling (Knuth, TAOCP vol. 2, 3.4.2 S).
Outputs are written to a temporary file and renamed into place, so a failed run leaves nothing behind.
Paths are checked before any reading: inputs exist, outputs can be written, no output is written twice,
and only dedupe and shuffle may write over their input (in place, the default there).
Accepted formats are listed in dataset/formats.py; mix writes the canonical MiniMind form.
"""
import argparse
import math
import os
import random
import sys
from pathlib import Path

from dataset.formats import KINDS, detect_kind, dumps, iter_jsonl
from dataset.streaming import BUCKET_BYTES, duplicate_linenos, hold_out, select_indices, shuffle_lines
from core.atomic import atomic_open
from core.errors import UserError
from core.ownership import check_outputs
from core.cli import ArgumentParser, check_range, run_cli
from tokenizer.tokenizer import encode_chat, load_default_tokenizer

def read_records(path, kind="any", skip_bad=False, report=None):
    """Yield (lineno, record) of a file, checked by dataset/formats.py."""
    return iter_jsonl(path, skip_bad=skip_bad, kind=kind, on_bad=report)


def count_lines(path, kind="any", skip_bad=False):
    """Number of good records in a file (one streaming pass)."""
    return sum(1 for _ in read_records(path, kind, skip_bad))


MAX_WEIGHT = 1000  # FILE:N copies a file N times; past this a typo (FILE:1e12) would fill the disk
WEIGHT_HINT = f"a weight is a positive finite number up to {MAX_WEIGHT}, e.g. file.jsonl:2.5 or file.jsonl:4"


def parse_weight(spec):
    """'file.jsonl:4' -> (file, 4.0); 'file.jsonl:0.5' -> (file, 0.5); 'file.jsonl' -> (file, 1.0).

    A spec that is an existing file, or whose part after the last ':' holds a '/', is a plain path."""
    path, sep, w = spec.rpartition(":")
    if not sep or os.path.isfile(spec) or "/" in w or os.sep in w:
        return spec, 1.0
    try:
        weight = float(w[:-1] if w.endswith("x") else w)
    except ValueError:
        raise UserError(f"{spec}: {w!r} is not a weight (and {spec} is no file); {WEIGHT_HINT}") from None
    if not (math.isfinite(weight) and 0 < weight <= MAX_WEIGHT):
        raise UserError(f"{spec}: bad weight {w}; {WEIGHT_HINT}")
    return path, weight


def check_paths(inputs, outputs, in_place=False):
    """Before any reading: every input is an existing file, every output (flag, path) can be written,
    no two outputs are one file, and no output is an input (by name, link or inode: core/ownership.py)
    unless the command rewrites in place."""
    for path in inputs:
        if Path(path).is_dir():
            raise UserError(f"{path}: is a directory, not a file; pass a .jsonl file inside it")
        if not Path(path).is_file():
            raise UserError(f"{path}: no such file; check the path (relative paths start at the current directory)")
    check_outputs(outputs, [] if in_place else inputs)


def check_flags(args):
    """One line for a numeric flag out of its range (parsing only checks that it is a number)."""
    for flag, low, high in (("max_seq_len", 1, None), ("limit", 0, None), ("max_errors", 0, None),
                            ("seed", 0, 2**32 - 1), ("bucket_bytes", 1, None)):
        if getattr(args, flag, None) is not None:
            check_range(f"--{flag}", getattr(args, flag), low, high, integer=True)
    if getattr(args, "val_ratio", None) is not None and not 0 < args.val_ratio < 1:
        raise UserError(f"--val_ratio {args.val_ratio}: must be between 0 and 1 (both excluded), e.g. 0.05")


def file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def cmd_validate(args):
    check_paths(args.files, [])
    n_problems, n_files_bad = 0, 0
    for path in args.files:
        problems = []

        def report(msg):
            problems.append(msg)
            if len(problems) <= args.max_errors:
                print(f"error: {msg}", file=sys.stderr)

        kind = args.kind
        try:
            if kind == "auto":
                kind = detect_kind(path)
            n = sum(1 for _ in read_records(path, kind, skip_bad=True, report=report))
        except UserError as e:  # file-level problem: an empty file
            report(str(e))
            n = 0
        if problems:
            n_files_bad += 1
            n_problems += len(problems)
            if len(problems) > args.max_errors:
                print(f"error: {path}: ... {len(problems) - args.max_errors} more problems not shown",
                      file=sys.stderr)
            print(f"FAIL {path}: {n:,} good records, {len(problems):,} problems")
        else:
            print(f"ok   {path}: {n:,} records ({kind})")
    if n_problems:
        raise UserError(f"{n_problems:,} problems in {n_files_bad} of {len(args.files)} files; fix the lines listed above")


def cmd_stats(args):
    check_paths(args.files, [])
    tok = load_default_tokenizer()
    edges = [64, 128, 256, 512, 1024, 2048, 4096]
    for path in args.files:
        kind = detect_kind(path) if args.kind == "auto" else args.kind
        n = turns = tokens = longest = over = n_system = 0
        hist = [0] * (len(edges) + 1)
        for _, rec in read_records(path, kind, args.skip_bad):
            if "conversations" in rec:
                msgs = rec["conversations"]
                n_system += msgs[0]["role"] == "system"
                turns += sum(m["role"] == "user" for m in msgs)
                ids, _ = encode_chat(tok, msgs, add_generation_prompt=msgs[-1]["role"] == "user")
                length = len(ids)
            else:
                length = len(tok.encode(rec["text"])) + 1  # + eos between documents
            n += 1
            tokens += length
            longest = max(longest, length)
            over += length > args.max_seq_len
            hist[sum(length > e for e in edges)] += 1
            if args.limit and n >= args.limit:
                break
        print(f"{path} ({kind})")
        print(f"  samples     {n:,}" + (f" (first {args.limit:,} only)" if args.limit and n >= args.limit else ""))
        if kind != "text":
            print(f"  user turns  {turns:,} ({turns / max(n, 1):.2f} per sample), {n_system:,} with a system message")
        print(f"  tokens      {tokens:,} (mean {tokens / max(n, 1):.1f}, max {longest:,})")
        print(f"  > max_seq_len {args.max_seq_len}: {over:,} ({100 * over / max(n, 1):.1f}%)")
        print("  length histogram (tokens)")
        lows = [0] + edges
        width = max(hist) or 1
        for i, c in enumerate(hist):
            label = f"{lows[i] + 1}-{edges[i]}" if i < len(edges) else f">{edges[-1]}"
            print(f"    {label:>10} {c:>9,} {'#' * round(40 * c / width)}")


def cmd_mix(args):
    rng = random.Random(args.seed)
    specs = [parse_weight(s) for s in args.inputs]
    out = Path(args.output)
    check_paths([p for p, _ in specs], [("-o", out)])
    total_bytes = sum(file_size(p) * math.ceil(w) for p, w in specs)
    counts = {}

    def lines():
        for i, (path, weight) in enumerate(specs):
            whole, frac = int(weight), weight - int(weight)
            n = count_lines(path, args.kind, args.skip_bad) if frac > 0 else 0
            picks = select_indices(n, round(frac * n), rng) if frac > 0 else None
            written = 0
            for _, rec in read_records(path, args.kind, args.skip_bad):
                copies = whole + (next(picks) if picks is not None else 0)
                line = dumps(rec) + "\n"
                for _ in range(copies):
                    written += 1
                    yield line
            counts[i] = written

    with atomic_open(out) as f:
        for line in (shuffle_lines(lines(), total_bytes, rng, out.parent, args.bucket_bytes)
                     if not args.no_shuffle else lines()):
            f.write(line)
    for i, (path, weight) in enumerate(specs):
        print(f"{path}: x{weight:g} -> {counts.get(i, 0):,} lines")
    print(f"wrote {out} ({sum(counts.values()):,} lines)")


def cmd_split(args):
    src = Path(args.file)
    stem = src.with_suffix("") if src.suffix == ".jsonl" else src
    out_train = Path(args.train_out or f"{stem}_train.jsonl")
    out_val = Path(args.val_out or f"{stem}_val.jsonl")
    check_paths([src], [("--train_out", out_train), ("--val_out", out_val)])
    counts = [0, 0]         # train, validation lines
    with atomic_open(out_train) as ft, atomic_open(out_val) as fv:
        for rec, val in hold_out(lambda: read_records(src, args.kind, args.skip_bad), file_size(src),
                                 out_train.parent, args.val_ratio, random.Random(args.seed), args.bucket_bytes):
            (fv if val else ft).write(dumps(rec) + "\n")
            counts[val] += 1
    print(f"wrote {out_train} ({counts[0]:,} lines) and {out_val} ({counts[1]:,} lines); "
          "copies of one sample are all on one side")


def cmd_dedupe(args):
    src = Path(args.file)
    out = Path(args.output or src)
    check_paths([src], [("-o", out)], in_place=True)
    records = read_records(src, args.kind, args.skip_bad)
    drops = duplicate_linenos(records, file_size(src), out.parent, args.mode, args.bucket_bytes)
    next_drop = next(drops, None)
    kept = dropped = 0
    with atomic_open(out) as f:
        for lineno, rec in read_records(src, args.kind, args.skip_bad):
            if lineno == next_drop:
                dropped += 1
                next_drop = next(drops, None)
                continue
            kept += 1
            f.write(dumps(rec) + "\n")
    print(f"wrote {out}: kept {kept:,}, removed {dropped:,} duplicates ({args.mode})")


def cmd_shuffle(args):
    src = Path(args.file)
    out = Path(args.output or src)
    check_paths([src], [("-o", out)], in_place=True)
    rng = random.Random(args.seed)
    lines = (dumps(rec) + "\n" for _, rec in read_records(src, args.kind, args.skip_bad))
    n = 0
    with atomic_open(out) as f:
        for line in shuffle_lines(lines, file_size(src), rng, out.parent, args.bucket_bytes):
            f.write(line)
            n += 1
    print(f"wrote {out} ({n:,} lines, seed {args.seed})")


def build_parser():
    p = ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, kind_default="any"):
        sp.add_argument("--kind", choices=KINDS + ("auto",), default=kind_default,
                        help="what each line must be: chat (ends with assistant), prompt, text, any, "
                             "or auto (from the file's first line)")
        sp.add_argument("--skip_bad", action="store_true", help="skip and count bad lines instead of stopping")
        sp.add_argument("--seed", type=int, default=42, help="random seed for shuffling and sampling")
        sp.add_argument("--bucket_bytes", type=int, default=BUCKET_BYTES, help=argparse.SUPPRESS)

    sp = sub.add_parser("validate", help="report every bad line (file:line: what is wrong); exit 2 if any")
    sp.add_argument("files", nargs="+")
    sp.add_argument("--kind", choices=KINDS + ("auto",), default="auto",
                    help="auto: text/chat/prompt decided by each file's first line")
    sp.add_argument("--max_errors", type=int, default=50, help="problems printed per file")
    sp.set_defaults(fn=cmd_validate)

    sp = sub.add_parser("stats", help="samples, turns, tokens, a length histogram, how many exceed max_seq_len")
    sp.add_argument("files", nargs="+")
    sp.add_argument("--max_seq_len", type=int, default=512)
    sp.add_argument("--limit", type=int, default=0, help="only the first N samples (0 = all)")
    common(sp, "auto")
    sp.set_defaults(fn=cmd_stats)

    sp = sub.add_parser("mix", help="FILE:N repeats a file N times, FILE:0.3 samples 30%%; shuffled")
    sp.add_argument("inputs", nargs="+", metavar="FILE[:WEIGHT]")
    sp.add_argument("-o", "--output", required=True)
    sp.add_argument("--no_shuffle", action="store_true", help="keep files in order")
    common(sp)
    sp.set_defaults(fn=cmd_mix)

    sp = sub.add_parser("split", help="seeded train/validation split by unique sample (copies stay together)")
    sp.add_argument("file")
    sp.add_argument("--val_ratio", type=float, default=0.05)
    sp.add_argument("--train_out", help="default: FILE_train.jsonl")
    sp.add_argument("--val_out", help="default: FILE_val.jsonl")
    common(sp)
    sp.set_defaults(fn=cmd_split)

    sp = sub.add_parser("dedupe", help="drop repeated records, keeping the first")
    sp.add_argument("file")
    sp.add_argument("-o", "--output", help="default: rewrite FILE in place")
    sp.add_argument("--mode", choices=("exact", "normalized"), default="normalized",
                    help="normalized also ignores whitespace, case and full/half width")
    common(sp)
    sp.set_defaults(fn=cmd_dedupe)

    sp = sub.add_parser("shuffle", help="seeded shuffle of one file")
    sp.add_argument("file")
    sp.add_argument("-o", "--output", help="default: rewrite FILE in place")
    common(sp)
    sp.set_defaults(fn=cmd_shuffle)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_flags(args)
    args.fn(args)


if __name__ == "__main__":
    run_cli(main)
