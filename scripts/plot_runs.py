"""Overlay the loss curves (train, and validation dashed) of several training runs in one figure.
A GRPO run's curve is its mean reward (--metric loss or reward picks).

    python scripts/plot_runs.py out/logs/lora_music_512.jsonl out/logs/lora_music_sys_512.jsonl -o out/logs/cmp.png
    python scripts/plot_runs.py out/logs/*.jsonl                       # writes out/logs/runs.png
    python scripts/plot_runs.py out/logs/*.jsonl --smooth 0            # raw train curves only

The train loss is drawn raw (thin, light) and smoothed by a debiased exponential moving average (--smooth,
TensorBoard's slider); the figure is titled with the run's name, or "N runs".

Reads the out/logs/{run}.jsonl files every trainer writes (one JSON per logged step and per evaluation).
"""
import json
from pathlib import Path


from core.atomic import check_writable
from checkpoint.layout import out_dir
from core.errors import UserError
from core.cli import ArgumentParser, run_cli
from trainer.runlog import plot_curves


NOT_A_LOG = "is not a TinyMind training log; pass out/logs/<run>.jsonl files"


def is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_log(path):
    """One line naming the file unless every line is a JSON object with a numeric step (the first may
    be {"step": N, "config": {...}}), loss and val_loss are numbers, and at least one row has a loss."""
    if not Path(path).is_file():
        raise UserError(f"{path}: no such log file; trainers write out/logs/<run>.jsonl")
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot be read ({type(e).__name__}); it {NOT_A_LOG}") from None
    n_loss = 0
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise UserError(f"{path}:{n}: not JSON, so the file {NOT_A_LOG}") from None
        bad = ("a JSON object" if not isinstance(row, dict) else
               next((f'"{k}" a number' for k in ("step", "loss", "val_loss")
                     if (k in row or k == "step") and not is_number(row.get(k))), None))
        if bad:
            raise UserError(f"{path}:{n}: expected {bad}, so the file {NOT_A_LOG}")
        n_loss += "loss" in row or "val_loss" in row
    if not n_loss:
        raise UserError(f"{path}: {'is empty' if not ''.join(lines).strip() else 'has no loss rows'}; it {NOT_A_LOG}")


def main(argv=None):
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logs", nargs="+", help="out/logs/{run}.jsonl files")
    ap.add_argument("-o", "--output", default=str(out_dir() / "logs" / "runs.png"), help="PNG to write")
    ap.add_argument("--labels", default="", help="comma list of legend names (default: file names)")
    ap.add_argument("--metric", choices=("loss", "reward"), default=None,
                    help="what to draw; default: reward for GRPO logs (they have it), else loss")
    ap.add_argument("--smooth", type=float, default=0.9,
                    help="weight in [0, 1) of the moving average drawn over the raw train loss (0 = off)")
    args = ap.parse_args(argv)
    if not 0 <= args.smooth < 1:      # NaN too
        raise UserError(f"--smooth must be in [0, 1) (got {args.smooth}); 0.9 smooths, 0 draws the raw curve only")
    if Path(args.output).suffix.lower() != ".png":
        raise UserError(f"-o {args.output}: the plot is a PNG; give a file name ending in .png")
    check_writable(args.output)
    for p in args.logs:
        check_log(p)
    labels = [s for s in args.labels.split(",") if s] or None
    if labels and len(labels) != len(args.logs):
        raise UserError(f"--labels has {len(labels)} names for {len(args.logs)} logs")
    try:
        plot_curves(args.logs, args.output, labels, args.smooth, args.metric)
    except (ValueError, KeyError) as e:
        raise UserError(f"a log file is not a TinyMind training log ({e}); pass out/logs/*.jsonl files")
    print(f"saved {args.output}")


if __name__ == "__main__":
    run_cli(main)
