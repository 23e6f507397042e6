"""Command-line plumbing every TinyMind command shares: a user's mistake is one line and exit status 2.

Every entry point (trainer/*.py, scripts/*.py, eval_model.py) ends with
    if __name__ == "__main__":
        run_cli(main)
"""
import os
import sys

from model.errors import UserError


def run_cli(main, *args, **kwargs):
    """Run main(); turn a UserError into 'error: ...' on stderr and exit status 2."""
    try:
        return main(*args, **kwargs)
    except UserError as e:
        if os.environ.get("RANK", "0") == "0":     # under torchrun every rank fails; one prints
            sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
