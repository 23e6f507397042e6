r"""lm-evaluation-harness's command line with TinyMind's model ("tinymind") registered: every flag of
`python -m lm_eval` (lm-eval 0.4.13) works as it does there.

    python scripts/lm_eval_run.py --model tinymind --model_args model=smollm2 --tasks arc_easy --limit 100
    python scripts/lm_eval_run.py --model tinymind --model_args model=lora_music,batch_tokens=8192 \
        --tasks my_task --include_path DIR --log_samples --output_path out/lm_eval

model_args of tinymind: see evaluation/lm_eval_model.py (model_args win over --device and --batch_size).
A bad model=, an unknown task, --limit 0 or below, and a task whose data would be downloaded when the
Hugging Face Hub cannot be reached are one line each (exit 2), naming the local tasks that do run.
"""
import argparse
import math
import sys

from lm_eval.__main__ import cli_evaluate

from core.cli import run_cli
from core.errors import UserError
from evaluation.benchmarks import TASKS as BENCH_TASKS
from evaluation.lm_eval_model import local_tasks      # importing it registers "tinymind"


def read_flags(argv):
    """The flags this wrapper checks or names (lm-eval parses them all again): --tasks, --include_path, --limit."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--tasks", "-t", nargs="+", default=[])
    p.add_argument("--include_path")
    p.add_argument("--limit", "-L")
    return p.parse_known_args(argv)[0]


def check_limit(limit):
    """lm-eval's --limit: a count of documents per task (1 or more) or a fraction of them (0 to 1)."""
    if limit is None:
        return
    try:
        value = float(limit)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise UserError(f"--limit {limit}: give how many documents of each task to score (1 or more) or a "
                        "fraction of them (between 0 and 1); leave it out to score them all")


def local_hint(include_path):
    """What runs here without the hub: the --include_path tasks over local files, and eval_bench.py's."""
    found = local_tasks(include_path)
    here = (f"the local tasks of --include_path {include_path}: {', '.join(found)}" if found else
            "run a task over local files: a task YAML beside a JSONL file, --include_path DIR (docs/evaluation.md)")
    return f"{here}; or scripts/eval_bench.py --tasks {','.join(BENCH_TASKS)} (items from PyPI, not the Hub)"


def main():
    flags = read_flags(sys.argv[1:])
    check_limit(flags.limit)                 # before lm-eval indexes its tasks and loads the model
    tasks = ",".join(flags.tasks)
    try:
        cli_evaluate()
    except ValueError as e:
        if not str(e).startswith("Tasks not found"):
            raise
        missing = str(e).split(":", 1)[1].strip()
        raise UserError(f"--tasks {tasks}: no lm-eval task is named {missing}; "
                        f"{local_hint(flags.include_path)}") from None
    except ConnectionError as e:             # datasets: "Couldn't reach 'allenai/ai2_arc' on the Hub (...)"
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"--tasks {tasks}: its data would be downloaded, but the Hugging Face Hub cannot be "
                        f"reached ({reason}); {local_hint(flags.include_path)}") from None


if __name__ == "__main__":
    run_cli(main)                            # a bad model= is one line, exit 2
