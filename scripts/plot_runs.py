"""Overlay the loss curves (train, and validation dashed) of several training runs in one figure.

    python scripts/plot_runs.py out/logs/lora_music_512.jsonl out/logs/lora_music_sys_512.jsonl -o out/logs/cmp.png
    python scripts/plot_runs.py out/logs/*.jsonl                       # writes out/logs/runs.png

Reads the out/logs/{run}.jsonl files every trainer writes (one JSON per logged step and per evaluation).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # repo root

from model.atomic import check_writable  # noqa: E402
from model.paths import out_dir  # noqa: E402
from model.errors import UserError  # noqa: E402
from cli import ArgumentParser, run_cli  # noqa: E402
from trainer.runlog import plot_curves  # noqa: E402


def main(argv=None):
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logs", nargs="+", help="out/logs/{run}.jsonl files")
    ap.add_argument("-o", "--output", default=str(out_dir() / "logs" / "runs.png"), help="PNG to write")
    ap.add_argument("--labels", default="", help="comma list of legend names (default: file names)")
    args = ap.parse_args(argv)
    check_writable(args.output)
    for p in args.logs:
        if not Path(p).is_file():
            raise UserError(f"{p}: no such log file; trainers write out/logs/<run>.jsonl")
    labels = [s for s in args.labels.split(",") if s] or None
    if labels and len(labels) != len(args.logs):
        raise UserError(f"--labels has {len(labels)} names for {len(args.logs)} logs")
    try:
        plot_curves(args.logs, args.output, labels)
    except (ValueError, KeyError) as e:
        raise UserError(f"a log file is not a TinyMind training log ({e}); pass out/logs/*.jsonl files")
    print(f"saved {args.output}")


if __name__ == "__main__":
    run_cli(main)
