"""THE way every TinyMind writer puts a file or a folder on disk: never half-written, even if killed.

Write to a temporary name in the same folder (.NAME.tmpPID), fsync it, rename it onto NAME (atomic on
POSIX), then fsync the folder so the rename itself survives a power cut. A temporary whose process is gone
(a killed run) is removed by the next write into that folder; its name starts with a dot and never ends
in .pth, so nothing that lists checkpoints can mistake it for one.

Library module, no command:
    from core.atomic import atomic_open, atomic_path, write_files, write_text
    with atomic_open("out/eval/report.json") as f:
        f.write(text)
    with atomic_path("out/hf_model") as tmp:      # a folder: write into tmp, it replaces the target
        tmp.mkdir(); (tmp / "config.json").write_text("{}")
    write_files("out/hf_model", {"config.json": "{}"})    # or: these files into it, keeping the others
"""
import contextlib
import os
import re
import shutil
import threading
from pathlib import Path

from core.errors import UserError

# .NAME.tmpPID is being written by process PID; .NAME.tmpPID.old is the folder NAME it moved aside
TEMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp(?P<pid>\d+)(?P<old>\.old)?$")
_LOCKS, _LOCKS_GUARD = {}, threading.Lock()   # one lock per temporary name: threads share the pid


def temp_path(path):
    """The temporary name this process writes `path` under: .NAME.tmpPID in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def is_temp(path):
    return TEMP_RE.match(Path(path).name) is not None


def pid_alive(pid):
    """Whether process `pid` may still be writing; when unsure, yes (its temporary is kept)."""
    if os.name == "nt":             # os.kill(pid, 0) on Windows sends Ctrl+C or terminates the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's live process; a number no pid can have: not ours
        return True
    return True


def clean_stale_temps(folder):
    """Tidy what dead processes left in `folder`: remove their temporaries, and put back a folder one
    moved aside and was killed before moving its replacement in. Returns the paths removed or put back."""
    folder, done = Path(folder), []
    if not folder.is_dir():
        return done
    for p in sorted(folder.iterdir()):
        m = TEMP_RE.match(p.name)
        if not m or int(m["pid"]) == os.getpid() or pid_alive(int(m["pid"])):
            continue
        target = folder / m["name"]
        try:
            if m["old"] and not os.path.lexists(target):
                os.replace(p, target)
            elif p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            done.append(p)
        except OSError:             # another cleaner got there first, or no permission: not ours to fix
            pass
    return done


def fsync_path(path):
    """fsync a file, or a folder: every file and folder under it, then the folder itself."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in sorted(files):
                if not os.path.islink(os.path.join(root, name)):
                    _fsync_fd(os.path.join(root, name), os.O_RDONLY)
            for name in sorted(dirs):
                _fsync_dir(os.path.join(root, name))
        _fsync_dir(path)
    elif path.is_file():
        _fsync_fd(path, os.O_RDONLY)


def _fsync_fd(path, flags):
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder):
    try:
        _fsync_fd(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:                 # some filesystems (and Windows) cannot fsync a folder
        pass


def refuse_folder(path):
    """One line for an output file name that is an existing folder."""
    if Path(path).is_dir():
        raise UserError(f"{path}: is a directory; give a file name for the output")


def check_writable(path, folder=False):
    """Refuse an output path that cannot be written (a folder where a file goes, a file where a folder
    goes, a folder that does not take files, a name too long) before any work starts: one line naming
    the path. The folder is probed for real, with the temporary name the write will use (a permission
    check alone lets root through a read-only filesystem or /proc)."""
    path = Path(path)
    if len(path.name.encode()) > 200:           # room for the temporary's prefix and suffix (255 at most)
        raise UserError(f"{path.name[:40]}...: file name too long ({len(path.name)} characters); use a shorter one")
    if folder and path.exists() and not path.is_dir():
        raise UserError(f"{path}: is a file; give a folder name for the output")
    if not folder:
        refuse_folder(path)
    parent = next((p for p in [path.parent, *path.parent.parents] if p.exists()), None)
    if parent is None or not parent.is_dir():
        raise UserError(f"{path}: cannot write there ({parent} is not a folder); choose another output path")
    probe = temp_path(path) if parent == path.parent else parent / f".tinymind-probe.tmp{os.getpid()}"
    try:
        with open(probe, "x"):
            pass
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"{path}: cannot write there ({e.strerror or type(e).__name__} in {parent}); "
                        "choose another output path") from None
    return path


@contextlib.contextmanager
def _lock(tmp):
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(os.path.abspath(tmp), threading.Lock())
    with lock:
        yield


@contextlib.contextmanager
def atomic_path(path):
    """Yield the temporary path to write `path` under (a file or a folder; the caller creates it). On
    success it is fsynced and renamed onto `path`, and the folder is fsynced; on an exception it is
    removed, `path` is left as it was, and folders made for it are removed again if they stayed empty.
    A folder replaces an existing folder of the same name whole."""
    path = Path(path)
    made = [d for d in [path.parent, *path.parent.parents] if not d.exists()]      # deepest first
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{path}: cannot write there ({next(d for d in path.parents if d.exists())} is a file, "
                        "not a folder); choose another output path") from None
    tmp = temp_path(path)
    with _lock(tmp):
        clean_stale_temps(path.parent)
        _remove(tmp)
        try:
            yield tmp
            if not os.path.lexists(tmp):
                raise FileNotFoundError(f"atomic_path: nothing was written to {tmp}")
            fsync_path(tmp)
            _move_into_place(tmp, path)
            _fsync_dir(path.parent)
            made = []
        finally:
            _remove(tmp)
            for d in made:                  # a failed write leaves no empty folder behind
                with contextlib.suppress(OSError):
                    d.rmdir()


def _move_into_place(tmp, path):
    if path.exists() and path.is_dir() != tmp.is_dir():
        raise UserError(f"{path}: exists and is {'a folder' if path.is_dir() else 'a file'}; "
                        "choose another output path")
    if not (tmp.is_dir() and path.is_dir()):
        os.replace(tmp, path)
        return
    # os.replace cannot put a folder over a non-empty one: move the old one aside first. Killed in
    # between, the next write into this folder puts the old one back (clean_stale_temps).
    old = Path(f"{tmp}.old")
    _remove(old)
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        raise
    _remove(old)


@contextlib.contextmanager
def atomic_open(path, mode="w", encoding="utf-8", newline="\n"):
    """open() for writing that only replaces `path` when the block ends without an exception."""
    if mode not in ("w", "wt", "wb"):
        raise ValueError(f"atomic_open: mode {mode!r}; a file is written whole, use 'w' or 'wb'")
    refuse_folder(path)
    with atomic_path(path) as tmp:
        kw = {} if "b" in mode else dict(encoding=encoding, newline=newline)
        with open(tmp, mode, **kw) as f:
            yield f


def write_files(folder, files):
    """Write {file name: text, bytes or a function(path) that writes it} as `folder`. A new folder appears
    whole (atomic_path); in an existing one every file is written before any is renamed into place, and
    the files there that are not in `files` are kept."""
    folder = Path(folder)
    if os.path.lexists(folder) and not folder.is_dir():
        raise UserError(f"{folder}: exists and is not a folder; choose another output folder")
    if not folder.is_dir():
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            for name, content in files.items():
                _write_one(tmp / name, content)
        return folder
    with contextlib.ExitStack() as stack:
        for name, content in files.items():
            _write_one(stack.enter_context(atomic_path(folder / name)), content)
    return folder


def _write_one(path, content):
    if callable(content):
        content(path)
    elif isinstance(content, bytes):
        Path(path).write_bytes(content)
    else:
        Path(path).write_text(content, encoding="utf-8")


def write_text(path, text):
    with atomic_open(path) as f:
        f.write(text)
    return Path(path)


def write_bytes(path, data):
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def move(src, dst):
    """Rename src to dst (same filesystem; atomic), and make the rename itself durable."""
    os.replace(src, dst)
    _fsync_dir(Path(dst).parent)
    return Path(dst)


def keep_aside(files, folder):
    """Move the existing ones of `files` into `folder` (created), each under its own name, so that what
    replaces them never destroys them. -> the moved files' new paths ([] when none existed)."""
    moved = []
    for f in map(Path, files):
        if f.is_file():
            Path(folder).mkdir(parents=True, exist_ok=True)
            target = Path(folder) / f.name
            os.replace(f, target)
            moved.append(target)
    if moved:
        _fsync_dir(Path(folder))
    return moved


def _remove(p):
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif os.path.lexists(p):
        p.unlink(missing_ok=True)
