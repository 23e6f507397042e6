"""Tests for core/atomic.py, the one way TinyMind writes a file or a folder: nothing half-written, no
temporary left behind, dead processes' temporaries cleaned, never mistaken for a checkpoint, fsynced.

    pytest tests/test_atomic.py
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core import atomic
from core.atomic import atomic_open, atomic_path, clean_stale_temps, temp_path, write_files, write_text
from core.errors import UserError
from checkpoint.layout import find_checkpoints


@pytest.fixture
def dead_pid():
    """The pid of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def live_pid():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield p.pid
    p.kill()
    p.wait()


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    path = write_text(tmp_path / "report.json", "old")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write("new, half")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["report.json"]


def test_write_replaces_file(tmp_path):
    path = write_text(tmp_path / "a.txt", "old")
    write_text(path, "new")
    assert path.read_text() == "new" and sorted(os.listdir(tmp_path)) == ["a.txt"]


def test_file_name_that_is_a_folder_is_refused(tmp_path):
    (tmp_path / "out.jsonl").mkdir()
    with pytest.raises(UserError, match="out.jsonl: is a directory"):
        with atomic_open(tmp_path / "out.jsonl"):
            pytest.fail("the block must not run")
    assert sorted(os.listdir(tmp_path)) == ["out.jsonl"]


def test_a_file_where_a_folder_goes_is_one_line(tmp_path):
    (tmp_path / "f").write_text("mine")
    for path in (tmp_path / "f" / "x.jsonl", tmp_path / "f" / "sub" / "x.jsonl"):
        with pytest.raises(UserError, match=f"^{path}: cannot write there \\({tmp_path / 'f'} is a file, not a folder\\)"):
            write_text(path, "new")
    assert (tmp_path / "f").read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["f"]


def test_folder_write_replaces_folder(tmp_path):
    d = tmp_path / "hf"
    d.mkdir()
    (d / "old.txt").write_text("old")
    with atomic_path(d) as tmp:
        tmp.mkdir()
        (tmp / "sub").mkdir()
        (tmp / "sub" / "new.txt").write_text("new")
    assert [p.relative_to(d).as_posix() for p in sorted(d.rglob("*"))] == ["sub", "sub/new.txt"]
    assert sorted(os.listdir(tmp_path)) == ["hf"]              # no temporary, no old copy left


def test_failed_folder_write_leaves_old_folder(tmp_path):
    d = tmp_path / "hf"
    d.mkdir()
    (d / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(d) as tmp:
            tmp.mkdir()
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("killed mid-write")
    assert sorted(os.listdir(d)) == ["old.txt"] and sorted(os.listdir(tmp_path)) == ["hf"]


def test_write_files_keeps_other_files_of_an_existing_folder(tmp_path):
    d = tmp_path / "hf"
    d.mkdir()
    (d / "README.md").write_text("mine")
    (d / "config.json").write_text("old")
    with pytest.raises(RuntimeError):                   # a failure half-way changes nothing
        write_files(d, {"config.json": "new", "model.bin": lambda p: (_ for _ in ()).throw(RuntimeError())})
    assert (d / "config.json").read_text() == "old" and sorted(os.listdir(d)) == ["README.md", "config.json"]
    write_files(d, {"config.json": "new", "model.bin": b"\0", "vocab.txt": lambda p: p.write_text("v")})
    assert sorted(os.listdir(d)) == ["README.md", "config.json", "model.bin", "vocab.txt"]
    assert (d / "README.md").read_text() == "mine" and (d / "config.json").read_text() == "new"
    write_files(tmp_path / "fresh", {"config.json": "{}"})
    assert sorted(os.listdir(tmp_path)) == ["fresh", "hf"]


def test_dead_process_temporaries_removed_live_ones_kept(tmp_path, dead_pid, live_pid):
    dead_file = tmp_path / f".a.json.tmp{dead_pid}"
    dead_file.write_text("half")
    dead_dir = tmp_path / f".hf.tmp{dead_pid}"
    (dead_dir / "sub").mkdir(parents=True)
    (dead_dir / "sub" / "x.bin").write_bytes(b"half")
    live = tmp_path / f".b.json.tmp{live_pid}"
    live.write_text("being written")
    mine = tmp_path / f".c.json.tmp{os.getpid()}"
    mine.write_text("being written by this process")
    huge = tmp_path / ".d.json.tmp99999999999999999999"       # no pid is that big: not ours, left alone
    huge.write_text("someone's")
    other = tmp_path / ".e.json.tmp"                          # not our name at all
    other.write_text("someone's")
    write_text(tmp_path / "new.json", "{}")
    assert not dead_file.exists() and not dead_dir.exists()
    assert live.exists() and mine.exists() and huge.exists() and other.exists()
    assert (tmp_path / "new.json").read_text() == "{}"


def test_folder_moved_aside_by_a_killed_process_is_put_back(tmp_path, dead_pid):
    # killed between moving hf aside and moving its replacement in: hf is missing, both copies are temporaries
    old = tmp_path / f".hf.tmp{dead_pid}.old"
    old.mkdir()
    (old / "config.json").write_text("old")
    (tmp_path / f".hf.tmp{dead_pid}").mkdir()
    assert sorted(p.name for p in clean_stale_temps(tmp_path)) == sorted([old.name, f".hf.tmp{dead_pid}"])
    assert sorted(os.listdir(tmp_path)) == ["hf"] and (tmp_path / "hf" / "config.json").read_text() == "old"


def test_temporaries_are_never_listed_as_checkpoints(tmp_path):
    ckpt = tmp_path / "full_sft_512.pth"
    assert not temp_path(ckpt).name.endswith(".pth") and temp_path(ckpt).name.startswith(".")
    with atomic_path(ckpt) as tmp:
        tmp.write_bytes(b"half a checkpoint")
        assert tmp.parent == tmp_path and not tmp.name.endswith(".pth")
        assert find_checkpoints(tmp_path) == []
    assert find_checkpoints(tmp_path) == [ckpt]
    with atomic_path(ckpt) as tmp:                     # rewriting: only the finished file is listed
        tmp.write_bytes(b"a newer checkpoint")
        assert find_checkpoints(tmp_path) == [ckpt]
    d = tmp_path / "exported.pth"                      # a folder's moved-aside copy is no .pth either
    assert not Path(f"{temp_path(d)}.old").name.endswith(".pth")


def fd_path(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def test_fsync_is_called_on_the_file_and_its_folder(tmp_path, monkeypatch):
    seen, real = [], os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (seen.append(fd_path(fd)), real(fd))[1])
    path = tmp_path / "report.json"
    write_text(path, "{}")
    assert len(seen) >= 2                              # the file, then the folder that holds its new name
    if None not in seen:                               # Linux: the names the fsynced descriptors had
        assert seen[0] == str(temp_path(path)) and seen[-1] == str(tmp_path)
    seen.clear()
    with atomic_path(tmp_path / "hf") as tmp:
        (tmp / "sub").mkdir(parents=True)
        (tmp / "a.txt").write_text("a")
        (tmp / "sub" / "b.txt").write_text("b")
    if None not in seen:
        tmp = temp_path(tmp_path / "hf")
        assert {str(tmp / "a.txt"), str(tmp / "sub" / "b.txt"), str(tmp / "sub"), str(tmp), str(tmp_path)} <= set(seen)
    else:
        assert len(seen) >= 5
