"""Standard benchmarks (ARC, HellaSwag, PIQA, WinoGrande, ...) on any checkpoint, adapter or imported
model, scored as lm-evaluation-harness scores them; several models side by side in one table.

    python scripts/eval_bench.py --fetch                                   # once: the items (86 MB download)
    python scripts/eval_bench.py --model smollm2                           # the 5 default tasks, 0-shot
    python scripts/eval_bench.py --model smollm2 --tasks arc_easy,piqa --limit 200 --num_fewshot 5
    python scripts/eval_bench.py --lora_name lora_music --with_base --gen identity,music  # adapter and its base
    python scripts/eval_bench.py --model out/full_sft_512.pth --model smollm2 --name sft_vs_smollm2
    python scripts/eval_bench.py --merge out/eval/a.json out/eval/b.json --name all_runs
    python scripts/eval_bench.py --model lora_music --with_base --tasks arc_easy --gen identity,music --gen_limit 50
    python scripts/eval_bench.py --model smollm2 --dtype float32,int8 --limit 500     # what int8 costs

--model takes a .pth (checkpoint or adapter: the adapter goes on the base it records), a .gguf file, a
Hugging Face folder, or a name: pretrain, full_sft, smollm2, an adapter name in out/lora. Tasks: arc_easy,
arc_challenge, hellaswag, piqa, winogrande, openbookqa, commonsense_qa, boolq, siqa, mmlu (or "all", or a
.jsonl items file). --limit N scores the first N items of each task. Each (model, task) report, with every
item's prediction, goes to out/eval/bench_{task}_{k}shot_{model}.json; the side-by-side table to
out/eval/{name}.md, .csv, .json and a bar chart .png (evaluation/report.py). --gen adds generation tasks
(identity, music, or a .jsonl question file; evaluation/gen_tasks.py), answered greedily by the same models,
to the same table; their reports go to out/eval/gen_{task}_{model}.json. --dtype float32,bfloat16,int8 loads
each model at each precision, side by side (a model's label then ends in _bfloat16 / _int8).
"""
from pathlib import Path


import torch

from core.cli import ArgumentParser, check_device, check_range, run_cli
from evaluation import benchmarks, gen_tasks, report
from evaluation.harness import DEFAULT_SEED
from evaluation.suite import evaluate_models, load_models
from checkpoint import layout
from core.atomic import check_writable
from core.errors import UserError
from inference.precision import PRECISIONS, precision_hint


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fetch", action="store_true", help="download the benchmark items once (into ~/.cache/tinymind)")
    p.add_argument("--model", action="append", default=[], help="a model to evaluate (repeatable; see above)")
    p.add_argument("--lora_name", action="append", default=[],
                   help="an adapter out/lora/{lora_name}_{hidden}.pth, on the base it records (repeatable)")
    p.add_argument("--with_base", action="store_true", help="also evaluate each adapter's base model")
    p.add_argument("--tasks", default=None,
                   help=f"comma-separated (default {','.join(benchmarks.DEFAULT_TASKS)}; 'all' for every task)")
    p.add_argument("--gen", default=None, help="generation tasks too, comma-separated: identity, music (dataset/"
                                              "music_test.jsonl) or .jsonl question files")
    p.add_argument("--gen_limit", type=int, default=None, help="answer only the first N questions of each --gen task")
    p.add_argument("--num_fewshot", type=int, default=0, help="solved examples before each question (default 0)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N items of each task")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the few-shot examples' draw")
    p.add_argument("--apply_chat_template", action="store_true",
                   help="put each question in the model's chat template (off by default, as in lm-eval)")
    p.add_argument("--batch_tokens", type=int, default=4096, help="tokens per forward pass (memory vs speed)")
    p.add_argument("--dtype", default="float32",
                   help=f"precision, or several comma-separated to compare them ({', '.join(PRECISIONS)}; "
                        "default float32; inference/precision.py)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--hidden_size", type=int, default=None, help="picks *_{hidden}.pth for a name (full_sft ...)")
    p.add_argument("--name", default=None, help="the table's name: out/eval/{name}.md (default bench_{model}, or "
                                                 "compare when several models; + _{k}shot_limit{N}_chat when set)")
    p.add_argument("--merge", nargs="+", default=None, metavar="REPORT",
                   help="merge earlier tables (out/eval/*.json written by this command) into one")
    p.add_argument("--out_dir", default=None, help="outputs (default $TINYMIND_OUT_DIR, else <repo>/out)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return check_args(p.parse_args(argv))


def check_args(args):
    check_device(args.device)
    args.dtypes = [d for d in args.dtype.split(",") if d]
    bad = [d for d in args.dtypes if d not in PRECISIONS] or ([] if args.dtypes else ["''"])
    if bad:
        raise UserError(f"--dtype {bad[0]}: use one of {', '.join(PRECISIONS)} (or several, comma-separated)")
    if len(set(args.dtypes)) < len(args.dtypes):
        raise UserError(f"--dtype {args.dtype}: each precision once")
    check_range("--num_fewshot", args.num_fewshot, 0, 100, integer=True)
    check_range("--batch_tokens", args.batch_tokens, 64, integer=True)
    check_range("--seed", args.seed, 0, 2**32 - 1, integer=True)
    if args.limit is not None:
        check_range("--limit", args.limit, 1, integer=True)
    if args.hidden_size is not None:
        check_range("--hidden_size", args.hidden_size, 1, integer=True)
    args.fetch_tasks = None if args.tasks in (None, "all") else args.tasks.split(",")   # --fetch: all by default
    if args.fetch and args.fetch_tasks and not set(args.fetch_tasks) <= set(benchmarks.TASKS):
        raise UserError(f"--fetch builds the known tasks ({', '.join(benchmarks.TASKS)}); a .jsonl file needs none")
    tasks = args.tasks if args.tasks is not None else ",".join(benchmarks.DEFAULT_TASKS)
    args.tasks = list(benchmarks.TASKS) if tasks == "all" else [t for t in tasks.split(",") if t]
    args.gen = gen_tasks.check_gen_names([t for t in (args.gen or "").split(",") if t])
    if args.gen_limit is not None:
        check_range("--gen_limit", args.gen_limit, 1, integer=True)
    if not (args.tasks or args.gen):
        raise UserError("--tasks: give at least one task (or --tasks '' with --gen)")
    benchmarks.check_task_names(args.tasks)
    if not (args.fetch or args.model or args.lora_name or args.merge):
        raise UserError("nothing to do: give --model or --lora_name (what to evaluate), --merge REPORT... or --fetch")
    if args.merge and (args.model or args.lora_name or args.gen):
        raise UserError("--merge combines earlier tables; give it without --model or --gen")
    return args


def table_name(args, labels):
    if args.name:
        return args.name
    plain = not (args.num_fewshot or args.limit or args.apply_chat_template)
    settings = "" if plain else layout.bench_settings(args.num_fewshot, args.limit, args.apply_chat_template)
    precisions = "" if args.dtypes == ["float32"] else "_" + "_".join(args.dtypes)
    return (f"bench_{labels[0]}" if len(labels) == 1 else "compare") + precisions + settings


def main(argv=None):
    args = parse_args(argv)
    out = layout.out_dir(args.out_dir)
    if args.fetch:
        benchmarks.fetch(args.fetch_tasks)
        if not (args.model or args.lora_name or args.merge):
            return 0
    specs = args.model + [str(layout.find_adapter(out, n, args.hidden_size)) for n in args.lora_name]
    if args.merge:
        rows = report.merge_reports(args.merge)
        name = args.name or "merged"
    else:
        name = table_name(args, [Path(m).stem for m in specs])
    for p in report.comparison_paths(out, name).values():
        check_writable(p)                                   # before any work
    if not args.merge:
        gen = gen_tasks.load_gen_tasks(args.gen, args.gen_limit)       # bad files: one line, before any model
        tasks = [benchmarks.load_task(t) for t in args.tasks]
        models = []
        for dtype in args.dtypes:                   # each model loaded once per precision, for both kinds of task
            hint = precision_hint(dtype, args.device)
            if hint:
                print(hint)
            models += load_models(specs, out, args.device, dtype, args.with_base, hidden_size=args.hidden_size)
        rows = evaluate_models(models, tasks, out, args.num_fewshot, args.limit, args.seed,
                               args.apply_chat_template, args.batch_tokens, progress=not args.no_progress)
        rows += gen_tasks.evaluate_gen(models, gen, out)
    written = report.write_comparison(rows, out, name)
    print(report.markdown_table(rows))
    print("table: " + ", ".join(str(p) for p in written.values()))
    return 0


if __name__ == "__main__":
    run_cli(main)
