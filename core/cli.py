"""Command-line plumbing every TinyMind command shares: a user's mistake is one line and exit status 2.

Every entry point (trainer/*.py, scripts/*.py, eval_model.py) ends with
    if __name__ == "__main__":
        run_cli(main)
"""
import argparse
import os
import sys
import warnings

from core.errors import UserError


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a usage mistake (unknown flag, missing value, wrong type) said in one line, exit 2,
    instead of the whole usage block."""

    def error(self, message):
        sys.stderr.write(f"error: {self.prog}: {message} (see --help)\n")
        sys.exit(2)


def show_warning(message, category, filename, lineno, file=None, line=None):
    """A library's warning (e.g. inference.prompt.WindowWarning) as one 'warning: ...' line."""
    (file or sys.stderr).write(f"warning: {message}\n")


def run_cli(main, *args, **kwargs):
    """Run main(); turn a UserError into 'error: ...' on stderr and exit status 2. Warnings print as
    one 'warning: ...' line each."""
    warnings.showwarning = show_warning
    try:
        return main(*args, **kwargs)
    except UserError as e:
        if os.environ.get("RANK", "0") == "0":     # under torchrun every rank fails; one prints
            sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)


def check_device(device, flag="--device"):
    """An empty value (let the tool choose), cpu, or a CUDA device this machine has; else one line."""
    import torch
    if not device:
        return device
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"{flag} {device!r}: not a device name; use cpu or cuda (cuda:1, ...)") from None
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"{flag} {device}: only cpu and cuda are supported")
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise UserError(f"{flag} {device}: this machine has no such CUDA device; use {flag} cpu")
    return device


def check_range(flag, value, low=None, high=None, low_open=False, integer=False):
    """One line unless low <= value <= high (low < value with low_open) and value is finite."""
    import math
    ok = isinstance(value, (int, float)) and (isinstance(value, int) or math.isfinite(value)) \
        and not (integer and value != int(value))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        if low is not None and high is not None:
            want = f"in {'(' if low_open else '['}{low}, {high}]"
        elif low is not None:
            want = f"{'above' if low_open else 'at least'} {low}"
        else:
            want = f"at most {high}"
        raise UserError(f"{flag} must be {'an integer ' if integer else 'a number '}{want} (got {value})")
    return value
