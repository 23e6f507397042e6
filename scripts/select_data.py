"""Select training data by Instruction-Following Difficulty (IFD, the Cherry LLM method): score every sample
with a model, then keep the hardest ones.

    python scripts/select_data.py score --data_path dataset/sft.jsonl --ckpt smollm2 -o out/select/sft_scores.jsonl
    python scripts/select_data.py select --data_path dataset/sft.jsonl --scores out/select/sft_scores.jsonl \\
        --ratio 0.1 -o out/select/sft_top10.jsonl
    torchrun --nproc_per_node 2 scripts/select_data.py score --data_path alpaca_data.json --ckpt smollm2 \\
        --prompt alpaca -o out/select/alpaca_scores.jsonl          # shards the scoring over 2 processes

score: for each sample, s(A|Q) and s(A) (the mean cross-entropy of the answer's tokens with and without
the question), ifd = s(A|Q) / s(A), ifd_ppl = exp(s(A|Q) - s(A)), the answer's token count, whether
anything was cut, and the sample's line (selection/ifd.py says exactly how each --prompt builds Q and "the
answer alone"). Multi-turn samples: the last assistant turn is A, everything before it Q. --max_length
tokens per pass: --prompt alpaca cuts as Cherry_LLM does (the whole text to max_length, the answer alone to
max_length - question - 2), chatml and plain cut the answer from the right to fit after the question (the
same answer tokens in both passes) and a question longer than max_length - 16 from the left; such samples
say "truncated". An
interrupted run continues its scores file when started again; a second run into the same file while one
runs is refused at start, naming the first one's pid (core/ownership.py). No command writes over one of
its inputs (--data_path, --scores, --ckpt): that is refused before any work. --ckpt takes what
eval_bench's --model does (a .pth checkpoint or adapter, smollm2, a .gguf, a Hugging Face folder, full_sft,
an adapter name).

select: the top --ratio (of the samples left after the filters) or --count by --by (ifd or ifd_ppl);
samples with ifd >= 1 are dropped unless --keep_above_one, and those with fewer than --min_answer_tokens
answer tokens. --pick bottom keeps the lowest instead, --pick random a random draw (--seed): the
baselines `python scripts/study.py --study ifd` trains beside the top. Writes the selected samples in
the input's own format (JSONL, or Alpaca's JSON array), and beside them {output}.stats.json and
{output}.hist.png (the scores' histogram with the cut marked).
Inputs: every JSONL format TinyMind reads, and Alpaca's alpaca_data.json (one JSON array).

cluster: Cherry's "pre-experienced" set for the brief first SFT of its 3 steps: each sample's instruction
embedded by --ckpt (its last hidden states averaged over the instruction's tokens), KMeans into --k
clusters (scikit-learn), the --per_cluster samples nearest each centre; also {output}.clusters.jsonl.

cherry: the paper's three steps in one command: cluster (above), a brief full SFT of --ckpt on that sample
(trainer/train_full_sft.py, --epochs), IFD scores with the briefly trained model, select; the steps' files
go beside --output ({output}.pre.jsonl, .cherry/, .scores.jsonl).

    python scripts/select_data.py cherry --data_path dataset/sft.jsonl --ckpt out/full_sft_512.pth --ratio 0.1 \\
        -o out/select/sft_cherry.jsonl

compare A B: Superfiltering's question, does a small scorer rank the samples as a big one does? Spearman's
rank correlation of two scores files' ifd over the samples both scored, and the overlap of their top --top.

    python scripts/select_data.py compare out/select/small_scores.jsonl out/select/smollm2_scores.jsonl
"""
import json
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import torch

from core.cli import ArgumentParser, check_device, check_range, run_cli
from checkpoint import layout
from checkpoint.adapter import is_adapter
from checkpoint.pth import FORMAT, read_pth
from core.atomic import write_text
from core.errors import UserError
from core.ownership import check_outputs, owning
from inference.load import find_model, load_model_spec
from inference.precision import PRECISIONS
from selection.cluster import embed, pick_per_cluster
from selection.ifd import PROMPTS
from selection.run import score_file
from selection.samples import read_samples, write_samples
from selection.select import BY, PICKS, cherry_paths, choose, compare, histogram, side_paths
from trainer.distributed import cleanup_distributed, setup_distributed


def add_common(sub, ckpt_help, output_help):
    """The flags every model-running command shares (data, model, output, prompt, window, device)."""
    sub.add_argument("--data_path", required=True, help="JSONL (any format) or Alpaca's JSON array")
    sub.add_argument("--ckpt", required=True, help=ckpt_help)
    sub.add_argument("-o", "--output", required=True, help=output_help)
    sub.add_argument("--prompt", choices=PROMPTS, default="chatml",
                     help="how the question is written: chatml (the scorer's chat template, default), alpaca "
                          "(Cherry's Stanford-Alpaca template and Cherry_LLM's own scores), plain")
    sub.add_argument("--max_length", type=int, default=512, help="tokens per pass (default 512, as Cherry's)")
    sub.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    sub.add_argument("--out_dir", default=None, help="where model names are looked up (default <repo>/out)")


def add_amount(sub):
    how = sub.add_mutually_exclusive_group(required=True)
    how.add_argument("--ratio", type=float, help="share of the samples left after the filters (e.g. 0.1)")
    how.add_argument("--count", type=int, help="how many samples")


def add_clusters(sub):
    sub.add_argument("--k", type=int, default=100, help="clusters (default 100, as Cherry's)")
    sub.add_argument("--per_cluster", type=int, default=10, help="samples taken from each (nearest its centre)")
    sub.add_argument("--seed", type=int, default=42)


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("score", help="score every sample (IFD)")
    add_common(s, "the scorer: a .pth, smollm2, .gguf, HF folder or a name",
               "the scores file (JSONL, one line per sample)")
    s.add_argument("--batch_tokens", type=int, default=1024,
                   help="padded tokens per forward (default 1024: the fastest measured on a 2-core CPU)")
    s.add_argument("--dtype", choices=PRECISIONS, default="float32", help="the scorer's precision")
    s.add_argument("--no_progress", action="store_true")
    t = sub.add_parser("select", help="keep the top samples by their scores")
    t.add_argument("--data_path", required=True, help="the file that was scored")
    t.add_argument("--scores", required=True, help="the scores file of `score`")
    t.add_argument("-o", "--output", required=True, help="the selected samples (the input's format)")
    add_amount(t)
    t.add_argument("--by", choices=BY, default="ifd", help="ifd (default) or ifd_ppl (Superfiltering)")
    t.add_argument("--keep_above_one", action="store_true", help="keep samples with ifd >= 1")
    t.add_argument("--min_answer_tokens", type=int, default=0, help="drop samples with fewer answer tokens")
    t.add_argument("--pick", choices=PICKS, default="top", help="top (default), bottom, or random (a baseline: "
                   "as many drawn at random from the samples left after the filters; --keep_above_one keeps "
                   "those with ifd >= 1 among them)")
    t.add_argument("--seed", type=int, default=42, help="of --pick random")
    k = sub.add_parser("cluster", help="Cherry's pre-experienced set: n samples from each of k KMeans clusters")
    add_common(k, "the model whose hidden states embed the instructions", "the chosen samples (the input's format)")
    add_clusters(k)
    h = sub.add_parser("cherry", help="the paper's 3 steps: cluster sample, brief SFT of the scorer, IFD, select")
    add_common(h, "the scorer to train briefly: a TinyMind .pth checkpoint",
               "the selected samples; the steps' files go beside it")
    add_amount(h)
    add_clusters(h)
    h.add_argument("--epochs", type=int, default=1, help="of the brief SFT on the clustered sample")
    h.add_argument("--batch_size", type=int, default=16)
    c = sub.add_parser("compare", help="rank correlation of two scorers' scores (Superfiltering)")
    c.add_argument("scores", nargs=2, help="two scores files of the same data")
    c.add_argument("--by", choices=BY, default="ifd")
    c.add_argument("--top", type=float, default=0.1, help="also: how much of one's top share the other keeps")
    return check_args(p.parse_args(argv))


def check_args(args):
    """Every flag a command has, range-checked before any work (one line each)."""
    given = vars(args)
    if "device" in given:
        check_device(args.device)
    for flag, low in (("max_length", 8), ("batch_tokens", 16), ("k", 1), ("per_cluster", 1), ("epochs", 1),
                      ("batch_size", 1), ("count", 1), ("min_answer_tokens", 0), ("seed", 0)):
        if given.get(flag) is not None:
            check_range(f"--{flag}", given[flag], low, 2**32 - 1 if flag == "seed" else None, integer=True)
    for flag in ("ratio", "top"):
        if given.get(flag) is not None:
            check_range(f"--{flag}", given[flag], 0, 1, low_open=True)
    return args


def model_file(spec):
    """--ckpt as the file or folder it names (None for a model name such as smollm2): an input too."""
    path = layout.resolve_input(spec)
    return path if path.exists() else None


def main_rank():
    """Whether this process holds a run's lock: the only one, or rank 0 of a torchrun job."""
    return os.environ.get("RANK", "0") == "0"


def score(args):
    data, output = layout.resolve_input(args.data_path), Path(args.output)
    check_outputs([("-o", output)], [("--data_path", data), ("--ckpt", model_file(args.ckpt))])
    if output.exists() and not list(output.parent.glob(output.name + ".part*")):
        raise UserError(f"{output}: already scored (a finished run); give another -o to score again")
    with owning(output, "scoring into", enabled=main_rank()):
        run_scoring(args, data, output)


def run_scoring(args, data, output):
    samples = read_samples(data)                            # a bad line: one line, before any model
    dist = setup_distributed(args.device)
    try:
        loaded = load_model_spec(args.ckpt, layout.out_dir(args.out_dir), device=dist.device, dtype=args.dtype)
        window = loaded.model.config.max_position_embeddings
        if args.max_length > window:
            raise UserError(f"--max_length {args.max_length}: the scorer's window is {window} tokens")
        if dist.is_main:
            print(f"scorer {loaded.describe()}; {len(samples):,} samples of {data}, --prompt {args.prompt}")
        path = score_file(samples, loaded, output, args.prompt, args.max_length, args.batch_tokens, dist,
                          progress=not args.no_progress)
    finally:
        cleanup_distributed()
    if dist.is_main:
        print(f"scores: {path}")


def select(args):
    data, scores, output = (layout.resolve_input(args.data_path), layout.resolve_input(args.scores),
                            Path(args.output))
    stats_path, png_path = side_paths(output)
    check_outputs([("-o", output), ("-o (its stats)", stats_path), ("-o (its histogram)", png_path)],
                  [("--data_path", data), ("--scores", scores)])
    samples = read_samples(data)
    rows = read_scores(scores)
    by_line = {s.line: s for s in samples}
    unknown = [r["line"] for r in rows if r["line"] not in by_line]
    if unknown or sorted(r["line"] for r in rows) != sorted(by_line):
        raise UserError(f"{scores}: scores {len(rows):,} lines for the {len(samples):,} samples of {data}"
                        + (f" (line {unknown[0]} is not a sample there)" if unknown else "")
                        + "; score this file (or finish the run)")
    kept, stats = choose(rows, args.ratio, args.count, args.by, args.keep_above_one, args.min_answer_tokens,
                         args.pick, args.seed)
    if not kept:
        raise UserError(f"--ratio {args.ratio}: selects none of the {stats['eligible']:,} samples left after the "
                        "filters; give a larger --ratio or --count")
    write_samples(output, [by_line[n] for n in kept], like=data)
    stats.update(data=str(data), scores=str(scores), output=str(output), ratio=args.ratio, count=args.count)
    write_text(stats_path, json.dumps(stats, indent=2) + "\n")
    histogram(rows, args.by, stats["cut"], png_path, f"{data.name}: {stats['selected']:,} of "
              f"{stats['samples']:,} selected by {args.by} ({args.pick})", args.pick)
    print(f"selected {stats['selected']:,} of {stats['samples']:,} samples ({stats['ifd_at_least_1_dropped']:,} "
          f"with ifd >= 1 dropped, {stats['without_score']:,} without a score); cut {args.by} "
          f"{stats['cut'] if stats['cut'] is not None else '-'}")
    print(f"wrote {output}, {stats_path}, {png_path}")


def read_scores(path):
    path = layout.resolve_input(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found; make it with `python scripts/select_data.py score ...`")
    rows = []
    for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(text) if text.strip() else None
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{n}: not a scores line ({e.msg}); make the file with `score`") from None
        if row is not None and not (isinstance(row, dict) and {"line", "ifd", "ifd_ppl", "answer_tokens"} <= set(row)):
            raise UserError(f"{path}:{n}: not a scores line (it needs line, ifd, ifd_ppl, answer_tokens); "
                            "make the file with `score`")
        rows += [row] if row is not None else []
    return rows


def compare_scores(args):
    a, b = (read_scores(p) for p in args.scores)
    try:
        res = compare(a, b, args.by, args.top)
    except ValueError:
        raise UserError(f"{args.scores[0]} and {args.scores[1]}: fewer than 2 samples scored in both") from None
    print(f"{res['samples']:,} samples scored by both: Spearman {res['spearman']:.4f} ({args.by}); of the top "
          f"{args.top:.0%} by the first, {res['top_overlap']:.1%} are in the top {args.top:.0%} by the second")


def cluster(args):
    data, output = layout.resolve_input(args.data_path), Path(args.output)
    labels_path = output.with_name(output.name + ".clusters.jsonl")
    check_outputs([("-o", output), ("-o (its clusters)", labels_path)],
                  [("--data_path", data), ("--ckpt", model_file(args.ckpt))])
    with owning(output, "clustering into"):
        cluster_into(args, data, output, labels_path)


def cluster_into(args, data, output, labels_path):
    samples = read_samples(data)
    if args.k > len(samples):
        raise UserError(f"--k {args.k}: more clusters than the {len(samples):,} samples of {data}")
    loaded = load_model_spec(args.ckpt, layout.out_dir(args.out_dir), device=args.device, dtype="float32")
    if args.max_length > loaded.model.config.max_position_embeddings:
        raise UserError(f"--max_length {args.max_length}: the model's window is "
                        f"{loaded.model.config.max_position_embeddings} tokens")
    vectors = embed(loaded, samples, args.prompt, args.max_length)
    lines, labels = pick_per_cluster(vectors, [s.line for s in samples], args.k, args.per_cluster, args.seed)
    by_line = {s.line: s for s in samples}
    write_samples(output, [by_line[n] for n in lines], like=data)
    write_text(labels_path, "".join(json.dumps({"line": s.line, "cluster": c}) + "\n"
                                    for s, c in zip(samples, labels)))
    print(f"{len(lines):,} samples from {args.k} clusters of {len(samples):,}; wrote {output}, {labels_path}")


def cherry(args):
    """Cherry's three steps, each a command of this script (its files beside --output): cluster (the
    pre-experienced sample), a brief full SFT of the scorer on it (trainer/train_full_sft.py), score every
    sample with the briefly trained model, select."""
    output = Path(args.output)
    kind, ckpt = find_model(layout.out_dir(args.out_dir), args.ckpt)
    obj = read_pth(ckpt, mmap=True) if kind == "pth" else None
    if obj is None or is_adapter(obj) or obj.get("format") != FORMAT:
        raise UserError(f"--ckpt {args.ckpt}: cherry trains the scorer briefly, so it needs a TinyMind checkpoint "
                        ".pth (import others with scripts/convert_model.py)")
    pre, work, scores = cherry_paths(output)
    check_outputs([("-o", output), ("-o (its clustered sample)", pre), ("-o (its scores)", scores)],
                  [("--data_path", layout.resolve_input(args.data_path)), ("--ckpt", ckpt)],
                  folders=[("-o (its brief SFT)", work)])
    with owning(output, "running cherry into"):
        cherry_steps(args, output, ckpt, pre, work, scores)


def cherry_steps(args, output, ckpt, pre, work, scores):
    common = dict(data_path=args.data_path, prompt=args.prompt, max_length=args.max_length, device=args.device,
                  out_dir=args.out_dir)
    cluster(Namespace(**common, ckpt=str(ckpt), output=str(pre), k=args.k, per_cluster=args.per_cluster,
                      seed=args.seed))
    cmd = [sys.executable, str(layout.repo_root() / "trainer" / "train_full_sft.py"), "--base", str(ckpt),
           "--data_path", str(pre), "--out_dir", str(work), "--epochs", str(args.epochs), "--batch_size",
           str(args.batch_size), "--max_seq_len", str(args.max_length), "--device", args.device, "--seed",
           str(args.seed), "--val_ratio", "0"]
    print("brief SFT: " + " ".join(cmd[1:]))
    if subprocess.run(cmd).returncode:
        raise UserError("the brief SFT failed (its output is above); the clustered sample is " + str(pre))
    trained = layout.find_stage_checkpoint(work, "full_sft")
    if not scores.exists():
        score(Namespace(**common, ckpt=str(trained), output=str(scores), batch_tokens=1024, dtype="float32",
                        no_progress=False))
    select(Namespace(data_path=args.data_path, scores=str(scores), output=str(output), ratio=args.ratio,
                     count=args.count, by="ifd", keep_above_one=False, min_answer_tokens=0, pick="top", seed=42))


def main(argv=None):
    args = parse_args(argv)
    {"score": score, "select": select, "compare": compare_scores, "cluster": cluster,
     "cherry": cherry}[args.command](args)
    return 0


if __name__ == "__main__":
    run_cli(main)
