"""What a user owns is never overwritten or lost: THE two rules every TinyMind writer follows.

1. An output is never one of the command's inputs: check_not_input refuses it before any work, in one line
   naming the flag and the file (the same file by name, through a symbolic link or a hard link: paths
   and inode/device are compared; an output folder that holds an input counts too).
2. A run's output has one owner at a time: owning(path) holds the lock file .NAME.lock beside it (created
   with O_CREAT|O_EXCL, holding the owner's pid, host and start time; removed when the block ends). A
   second process is refused at start in one line naming the first one's pid, or, with wait=, waits its
   turn (chat memory: every exchange appended, none lost). The lock of a process that is gone (killed) is
   taken over with a one-line warning.

Library module, no command:
    from core.ownership import check_not_input, check_outputs, owning
    check_not_input("-o", args.output, [("--data_path", data), ("--scores", scores)])
    check_outputs([("-o", out), ("--val_out", val)], inputs=[("--data_path", data)])   # and writable, distinct
    with owning(args.output, "scoring into"):
        ...                                   # a second `score -o` the same file is refused here
"""
import contextlib
import os
import socket
import time
import warnings
from pathlib import Path

from core.atomic import check_writable, pid_alive
from core.errors import UserError

EMPTY_LOCK_S = 10       # a lock file still empty after this long: its maker died between creating and writing


class LockWarning(UserWarning):
    """A lock left by a process that is gone was taken over (core.cli prints it as one warning line)."""


def same_file(a, b):
    """Whether paths a and b name one file: the same path once links are followed, or the same inode on
    the same device (a hard link)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except (OSError, ValueError):
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _inside(path, folder):
    """Whether `path` lies under `folder` (links followed)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path != folder and path.startswith(folder.rstrip(os.sep) + os.sep)


def _named(inputs):
    for item in inputs:
        name, path = item if isinstance(item, tuple) else ("", item)
        if path is not None and str(path) != "":
            yield f"{name} {path}".strip(), path


def check_not_input(flag, output, inputs, folder=False, hint="choose another output path"):
    """Refuse, before any work, an output that is one of `inputs` ([(flag or name, path)] or paths; None
    is skipped): the same file, a link to it, (folder=True) an output folder that holds one, or an
    existing file inside an input folder. The line ends with `hint`. -> Path(output)."""
    for named, path in _named(inputs):
        if same_file(output, path):
            why = (f"is also an input ({named})" if os.path.abspath(output) == os.path.abspath(path)
                   else f"is also an input (the same file as {named}, through a link)")
        elif folder and _inside(path, output):
            why = f"holds an input ({named})"
        elif Path(path).is_dir() and _inside(output, path) and os.path.lexists(output):
            why = f"is a file of an input ({named})"
        else:
            continue
        raise UserError(f"{flag} {output}: {why}; an input is never overwritten, {hint}")
    return Path(output)


def check_distinct(outputs):
    """Refuse two outputs [(flag, path)] that are one file (by name, link or inode)."""
    outputs = list(outputs)
    for i, (flag, path) in enumerate(outputs):
        for other_flag, other in outputs[:i]:
            if same_file(path, other):
                raise UserError(f"{other_flag} {other} and {flag} {path} are the same file; give each output "
                                "its own path")


def check_outputs(outputs, inputs=(), folders=(), hint="choose another output path"):
    """Before any work: every output [(flag, path)] (and every output folder in `folders`) can be
    written (core.atomic.check_writable), no two are one file, and none is an input (check_not_input)."""
    outputs, folders = list(outputs), list(folders)
    check_distinct(outputs + folders)
    for (flag, path), folder in [(o, False) for o in outputs] + [(f, True) for f in folders]:
        check_writable(path, folder=folder)
        check_not_input(flag, path, inputs, folder=folder, hint=hint)


def lock_path(path):
    """The lock file of an output: .NAME.lock in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


def _proc(pid):
    """(state, start time in clock ticks since boot) of process pid (Linux /proc), or (None, None) where
    that cannot be read. The start time tells a live owner from an unrelated process that got the same
    pid later; state Z is a process that has ended (a zombie not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return fields[0].decode(), fields[19].decode()
    except (OSError, IndexError, ValueError):
        return None, None


def _owner_line(doing):
    return f"{os.getpid()} {socket.gethostname()} {_proc(os.getpid())[1]} {doing}\n"


def _read_owner(lock):
    """(pid, host, start, doing) of a lock file; None while it is empty (being written), "gone" if it
    vanished, ("?", ...) if it is not a lock file."""
    try:
        text = Path(lock).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "gone"
    except OSError:
        return ("?", "", "None", "")
    if not text.strip():
        return None
    parts = text.strip().split(" ", 3)
    return tuple(parts + [""] * (4 - len(parts)))


def _is_stale(lock, owner):
    """Whether the process that holds `lock` is gone (when unsure: not stale, it may still be writing)."""
    if owner is None:               # created, not yet written: stale only if it stays empty
        try:
            return time.time() - os.stat(lock).st_mtime > EMPTY_LOCK_S
        except OSError:
            return False
    pid, host, start = owner[0], owner[1], owner[2]
    if not pid.isdigit() or host != socket.gethostname():
        return False                # another machine's process (a shared folder): cannot tell
    if int(pid) == os.getpid():
        return False
    if not pid_alive(int(pid)):
        return True
    state, now = _proc(int(pid))
    return state == "Z" or (start != "None" and now is not None and now != start)     # ended; pid reused


def _take_over(lock, owner):
    """Remove a stale lock; moved aside first, so that a lock another process took meanwhile survives."""
    aside = lock.with_name(f"{lock.name}.stale{os.getpid()}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:       # another process took it over first
        return
    if _read_owner(aside) != owner:             # a new owner got in between: put its lock back
        with contextlib.suppress(OSError):
            os.link(aside, lock)
    os.unlink(aside)
    if owner is not None:
        warnings.warn(f"{lock}: process {owner[0]}, which was {owner[3]} it, is gone; its lock is taken over",
                      LockWarning, stacklevel=4)


def acquire(path, doing="writing", wait=0.0, hint="choose another output path"):
    """Take the lock of output `path` (see the module doc) -> the lock's path. Held by a live process:
    wait up to `wait` seconds for it, then one line naming that process's pid, what it does, and `hint`."""
    lock = lock_path(path)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{path}: cannot write there ({e.strerror}); {hint}") from None
    deadline = time.monotonic() + wait
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _read_owner(lock)
            if owner == "gone":
                continue
            if _is_stale(lock, owner):
                _take_over(lock, owner)
                continue
            if time.monotonic() < deadline:
                time.sleep(0.01)
                continue
            who, what = (f"process {owner[0]}", owner[3] or doing) if owner else ("another process", doing)
            raise UserError(f"{path}: {who} is already {what} it (lock {lock}); wait until it ends, or "
                            f"{hint}") from None
        except OSError as e:
            raise UserError(f"{path}: cannot lock it ({e.strerror} in {lock.parent}); {hint}") from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(_owner_line(doing))
        return lock


def release(lock):
    """Remove a lock this process holds (one another process took over after all is left alone)."""
    owner = _read_owner(lock)
    if isinstance(owner, tuple) and owner[0] == str(os.getpid()):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)


@contextlib.contextmanager
def owning(path, doing="writing", wait=0.0, hint="choose another output path", enabled=True):
    """Hold the lock of output `path` for the block (acquire, then release however the block ends).
    enabled=False holds nothing (the other ranks of a torchrun job: rank 0 holds it for the run)."""
    lock = acquire(path, doing, wait, hint) if enabled else None
    try:
        yield lock
    finally:
        if lock is not None:
            release(lock)
