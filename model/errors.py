"""User-facing errors: one clear line, a non-zero exit, no traceback.

Every command-line entry point runs its main() through run_cli(main).
"""
import os
import sys


class UserError(Exception):
    """A mistake in the user's input (a file, a line, a flag): the message says what and what to do."""


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
