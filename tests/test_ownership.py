"""Nothing a user owns is overwritten or lost (core/ownership.py): an output that is one of a command's
inputs (by name, symbolic link or hard link) is refused before any work in one line naming the flag and
the file, for every tool that writes; a run's output has one owner at a time (a second scoring or training
run is refused at start naming the first one's pid, a dead owner's lock is taken over with a warning and
its work resumed); two real chat processes on one memory session keep every exchange.

    pytest tests/test_ownership.py
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from factories import FAST, REPO, make_adapter, make_checkpoint, run_main, write_chat, write_jsonl
from core.errors import UserError
from core.ownership import LockWarning, acquire, check_not_input, lock_path, owning, release
from scripts import convert_data, make_identity, merge_lora, prepare_data, select_data
from selection import run
from selection.samples import read_samples
from trainer import train_full_sft

pytestmark = pytest.mark.usefixtures("one_thread")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture
def data(tmp_path):
    return write_chat(tmp_path / "d.jsonl", n=6)


def links(tmp_path, path):
    """The ways one file can be named again: a symbolic link and a hard link to it."""
    os.symlink(path, tmp_path / "sym.jsonl")
    os.link(path, tmp_path / "hard.jsonl")
    return [tmp_path / "sym.jsonl", tmp_path / "hard.jsonl"]


def refused(main, argv, capsys, *says):
    """main(argv) exits 2 with one line holding each of `says`, and writes nothing new."""
    code, _, err = run_main(main, [str(a) for a in argv], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    for s in says:
        assert str(s) in err, err
    assert "delete" not in err
    return err


def holder(path, doing="scoring into"):
    """A real process that holds path's lock until killed -> Popen (its lock taken when this returns)."""
    p = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom core.ownership import acquire\n"
                          f"acquire({str(path)!r}, {doing!r}); print('held', flush=True); time.sleep(120)"],
                         stdout=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
    assert p.stdout.readline().strip() == "held"
    return p


def test_the_same_file_by_name_link_or_inode_is_an_input(tmp_path, data):
    for other in [data, tmp_path / "." / "d.jsonl", *links(tmp_path, data)]:
        with pytest.raises(UserError, match=f"^-o {other}: is also an input .*--data_path {data}.*choose another"):
            check_not_input("-o", other, [("--data_path", data), ("--scores", None)])
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "model.safetensors").write_text("x")
    with pytest.raises(UserError, match="holds an input"):                     # an output folder over it
        check_not_input("--to_hf", tmp_path, [("--ckpt", data)], folder=True)
    with pytest.raises(UserError, match="is a file of an input"):              # a file of an input folder
        check_not_input("--out", tmp_path / "hf" / "model.safetensors", [("--from_hf", tmp_path / "hf")])
    check_not_input("-o", tmp_path / "other.jsonl", [("--data_path", data)])   # a new file: fine
    check_not_input("--out", tmp_path / "hf" / "new.pth", [("--from_hf", tmp_path / "hf")])
    check_not_input("--to_hf", tmp_path / "x", [("--ckpt", data)], folder=True)


def test_select_and_cluster_never_write_over_their_inputs(tmp_path, data, capsys):
    scores = write_jsonl(tmp_path / "s.jsonl", [{"line": n, "ifd": 0.5, "ifd_ppl": 0.5, "answer_tokens": 3}
                                                for n in range(1, 7)])
    before = data.read_bytes(), scores.read_bytes()
    sel = ["select", "--data_path", data, "--scores", scores, "--count", "2", "-o"]
    for out, named in [(data, f"--data_path {data}"), (scores, f"--scores {scores}"),
                       *[(p, f"--data_path {data}") for p in links(tmp_path, data)]]:
        refused(select_data.main, sel + [out], capsys, f"-o {out}: is also an input (", named)
    os.replace(scores, tmp_path / "s.stats.json")                    # -o s: its stats file would be the scores
    refused(select_data.main, ["select", "--data_path", data, "--scores", tmp_path / "s.stats.json", "--count", "2",
                               "-o", tmp_path / "s"], capsys, f"-o (its stats) {tmp_path / 's.stats.json'}: is also")
    refused(select_data.main, ["cluster", "--data_path", data, "--ckpt", "nope.pth", "-o", data], capsys,
            f"-o {data}: is also an input (--data_path {data})")
    assert data.read_bytes() == before[0] and (tmp_path / "s.stats.json").read_bytes() == before[1]


def test_score_into_its_input_or_a_finished_file_never_says_delete(tmp_path, data, capsys):
    refused(select_data.main, ["score", "--data_path", data, "--ckpt", "x.pth", "-o", data], capsys,
            f"-o {data}: is also an input (--data_path {data})")
    done = write_jsonl(tmp_path / "done.jsonl", [{}])
    refused(select_data.main, ["score", "--data_path", data, "--ckpt", "x.pth", "-o", done], capsys,
            "already scored (a finished run); give another -o")
    ckpt = make_checkpoint(tmp_path / "m.pth")
    refused(select_data.main, ["score", "--data_path", data, "--ckpt", ckpt, "-o", ckpt], capsys,
            f"is also an input (--ckpt {ckpt})")


def test_cherry_refuses_a_scorer_inside_its_own_folder(tmp_path, data, capsys):
    ckpt = make_checkpoint(tmp_path / "top.jsonl.cherry" / "full_sft_64.pth")
    refused(select_data.main, ["cherry", "--data_path", data, "--ckpt", ckpt, "--count", "2", "-o",
                               tmp_path / "top.jsonl"], capsys, "-o (its brief SFT)", "holds an input (--ckpt")


def test_data_tools_never_write_over_their_inputs(tmp_path, data, capsys):
    before = data.read_bytes()
    sym, hard = links(tmp_path, data)
    for out in (data, sym, hard):           # x.jsonl -o x.jsonl --skip_bad used to drop lines from x.jsonl
        refused(convert_data.main, [data, "-o", out, "--skip_bad"], capsys, f"-o {out}: is also an input")
        refused(prepare_data.main, ["mix", f"{data}:2", "-o", out], capsys, f"-o {out}: is also an input")
        refused(prepare_data.main, ["split", data, "--val_out", out], capsys, f"--val_out {out}: is also an input")
    refused(prepare_data.main, ["split", data, "--train_out", tmp_path / "t.jsonl", "--val_out", tmp_path / "t.jsonl"],
            capsys, "are the same file")
    assert data.read_bytes() == before and not (tmp_path / "t.jsonl").exists()


def test_an_output_under_or_onto_a_file_is_one_line(tmp_path, data, capsys):
    blocker = tmp_path / "f"
    blocker.write_text("mine")
    refused(make_identity.main, ["--out_dir", blocker], capsys, f"{blocker}: is a file; give a folder name")
    refused(make_identity.main, ["--out_dir", blocker / "sub"], capsys, f"({blocker} is not a folder)")
    refused(convert_data.main, [data, "-o", blocker / "x.jsonl"], capsys, f"({blocker} is not a folder)")
    assert blocker.read_text() == "mine"


def test_model_tools_never_write_over_their_inputs(tmp_path, capsys, monkeypatch):
    base = make_checkpoint(tmp_path / "base.pth")
    adapter = tmp_path / "lora" / "a_64.pth"
    make_adapter(adapter, base)
    sha = base.read_bytes(), adapter.read_bytes()
    os.link(base, tmp_path / "hard.pth")
    for extra, out, says in [([], adapter, "(--adapter "), (["--base", base], base, "(--base "),
                             ([], base, "(the adapter's base "), ([], tmp_path / "hard.pth", "through a link")]:
        refused(merge_lora.main, ["--adapter", adapter, *extra, "--out", out], capsys, f"--out {out}: is also an", says)
    from scripts import convert_model       # its main() reads sys.argv
    for argv, says in [(["--to_hf", tmp_path, "--ckpt", base], f"--to_hf {tmp_path}: holds an input (--ckpt"),
                       (["--to_peft", tmp_path / "lora", "--adapter", adapter], "--to_peft"),
                       (["--from_hf", tmp_path, "--out", base], f"--out {base}: is a file of an input (--from_hf")]:
        monkeypatch.setattr(sys, "argv", ["convert_model.py", *map(str, argv)])
        refused(lambda _: convert_model.main(), [], capsys, says)
    assert (base.read_bytes(), adapter.read_bytes()) == sha


def test_a_trainer_never_writes_over_its_base_or_data(tmp_path, capsys):
    out = tmp_path / "out"
    base = make_checkpoint(out / "full_sft_64.pth")
    data = write_chat(tmp_path / "chat.jsonl", n=8)
    argv = ["--data_path", data, "--out_dir", out, "--max_steps", "1", *FAST]
    refused(train_full_sft.main, ["--base", base, *argv], capsys,
            f"the run's output {base}: is also an input (--base {base})", "pass another --out_dir")
    log = write_chat(out / "logs" / "full_sft_64.jsonl", n=8)
    argv[1] = log
    refused(train_full_sft.main, ["--base", make_checkpoint(tmp_path / "b.pth"), *argv], capsys,
            f"its log {log}: is also an input (--data_path {log})")
    assert not list(out.glob(".*.lock")) and not (out / "previous").exists()


def test_a_second_owner_is_refused_and_a_dead_ones_lock_taken_over(tmp_path):
    out = tmp_path / "o.jsonl"
    p = holder(out)
    try:
        with pytest.raises(UserError, match=rf"^{out}: process {p.pid} is already scoring into it \(lock "
                                            rf"{lock_path(out)}\); wait until it ends, or choose another"):
            acquire(out, "scoring into")
    finally:
        p.kill()
        p.communicate()
    with pytest.warns(LockWarning, match=f"process {p.pid}, which was scoring into it, is gone; its lock is taken"):
        with owning(out, "writing") as lock:
            assert lock.read_text().split()[0] == str(os.getpid())
    assert not lock.exists()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:                                # a live process with the pid, started after the lock was: pid reused
        lock.write_text(f"{other.pid} {socket.gethostname()} 1 writing\n")
        with pytest.warns(LockWarning, match=f"process {other.pid}"):
            release(acquire(out))
    finally:
        other.kill()
        other.wait()
    lock.write_text("")                                 # being written by its maker: held, not stale
    with pytest.raises(UserError, match="another process is already"):
        acquire(out, wait=0.05)
    os.utime(lock, (time.time() - 60, time.time() - 60))    # still empty a minute later: its maker died
    release(acquire(out))
    assert not lock.exists()


def slow_score(argv, delay=0.15):
    """`select_data.py score` in a real process whose every batch takes `delay` s longer -> Popen."""
    code = ("import sys, time\nfrom selection import run\nreal = run.score_batch\n"
            f"run.score_batch = lambda *a: (time.sleep({delay}), real(*a))[1]\n"
            "from core.cli import run_cli\nfrom scripts.select_data import main\n"
            f"run_cli(main, {[str(a) for a in argv]!r})")
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(cond, proc, timeout=120):
    """Poll cond() while proc runs; it ending first, or the timeout, fails the test (proc killed)."""
    end = time.time() + timeout
    while not cond():
        if proc.poll() is not None or time.time() > end:
            proc.kill()
            pytest.fail(f"the state awaited never came: {proc.communicate()}")
        time.sleep(0.05)


def test_two_scoring_runs_into_one_file_the_second_is_refused_and_nothing_is_lost(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "m.pth", std=0.08)
    data = write_chat(tmp_path / "d.jsonl", n=24, seed=4)
    out = tmp_path / "s.jsonl"
    argv = ["score", "--data_path", data, "--ckpt", ckpt, "--max_length", "64", "--batch_tokens", "100",
            "--no_progress", "--device", "cpu", "-o", out]
    first = slow_score(argv)
    part = tmp_path / "s.jsonl.part0of1"
    wait_for(lambda: part.is_file() and part.read_text().count("\n") >= 2, first)
    refused(select_data.main, argv, capsys, f"{out}: process {first.pid} is already scoring into it")
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    rows = [json.loads(s) for s in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == list(range(1, 25))                 # the first's work, whole

    again = tmp_path / "again.jsonl"                 # killed mid-run: its lock taken over, its scores resumed
    killed = slow_score(argv[:-1] + [again])
    part = tmp_path / "again.jsonl.part0of1"
    wait_for(lambda: part.is_file() and part.read_text().count("\n") >= 3, killed)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    kept = len(part.read_text().splitlines())
    code, stdout, err = run_main(select_data.main, [str(a) for a in argv[:-1] + [again]], capsys)
    assert code in (0, None) and f"resuming {again}: {kept:,} samples already scored" in stdout
    assert f"warning: {lock_path(again)}: process {killed.pid}, which was scoring into it, is gone" in err
    assert again.read_bytes() == out.read_bytes() and not lock_path(again).exists()


def test_a_second_training_run_of_the_same_name_is_refused(tmp_path, capsys):
    base = make_checkpoint(tmp_path / "base.pth")
    data = write_chat(tmp_path / "chat.jsonl", n=8)
    out = tmp_path / "out"
    argv = ["--base", base, "--data_path", data, "--out_dir", out, *FAST]
    first = subprocess.Popen([sys.executable, "trainer/train_full_sft.py", *map(str, argv), "--max_steps", "100000",
                              "--max_minutes", "3"],
                             cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = out / ".full_sft_64.pth.lock"
    try:
        wait_for(lock.exists, first)
        refused(train_full_sft.main, [*argv, "--max_steps", "1"], capsys,
                f"{out / 'full_sft_64.pth'}: process {first.pid} is already training full_sft_64 into it",
                "pass another --out_dir")
    finally:
        first.kill()
        first.communicate()
    with pytest.warns(LockWarning, match=f"process {first.pid}"):          # killed: the next run takes over
        train_full_sft.main([str(a) for a in [*argv, "--max_steps", "1"]])
    assert (out / "full_sft_64.pth").is_file() and not lock.exists()


def test_two_chats_on_one_session_keep_every_exchange(tmp_path):
    code = ("import sys\nfrom chat.memory import Memory\nm = Memory.open('alice', out=sys.argv[1])\n"
            "for i in range(30):\n    m.add(f'{sys.argv[2]} {i}', 'noted')\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "out"), tag], cwd=REPO, env=ENV,
                              stderr=subprocess.PIPE, text=True) for tag in ("a", "b")]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    turns = [json.loads(s)["user"] for s in (tmp_path / "out" / "memory" / "alice.jsonl").read_text().splitlines()]
    assert sorted(turns) == sorted(f"{t} {i}" for t in "ab" for i in range(30))
    assert not (tmp_path / "out" / "memory" / ".alice.jsonl.lock").exists()


def test_parts_are_merged_whole_and_an_unfinished_set_is_kept(tmp_path):
    samples = read_samples(write_chat(tmp_path / "d.jsonl", n=3))
    out = tmp_path / "s.jsonl"
    row = {"ifd": 0.5, "ifd_ppl": 0.5, "answer_tokens": 3}
    write_jsonl(run.part_path(out, 0, 2), [{"line": 1, **row}, {"line": 3, **row}])
    write_jsonl(run.part_path(out, 1, 2), [{"line": 2, **row}])
    with pytest.raises(UserError, match=r"s.jsonl: 1 samples not scored yet; the scores are kept in s.jsonl.part\*: "
                                        "run the same command again to finish, or give another -o"):
        run.merge_parts(out, samples + read_samples(write_chat(tmp_path / "e.jsonl", n=4))[3:], 2)
    write_jsonl(run.part_path(out, 1, 2), [{"line": 2, **row}, {"line": 3, **row}])   # scored twice: kept once
    assert [r["line"] for r in run.merge_parts(out, samples, 2)] == [1, 2, 3]
