"""core/threads.py and core/openmp.py: the thread count a run takes (--threads, OMP_NUM_THREADS, else every
core), the other programs' load it reports (from /proc, this process's own CPU time left out), and passive
OpenMP waits in a trainer process (set before torch loads; a user's own policy kept)."""
import subprocess
import sys
import threading
import time

import pytest
import torch

import core.threads as ct
from factories import REPO

LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
SPIN = "import time\nt = time.time() + {s}\nwhile time.time() < t: pass"


@pytest.fixture
def restore_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@LINUX
def test_a_busy_neighbour_is_seen_and_this_process_is_not():
    stop = time.monotonic() + 1.0

    def spin():                               # this process's own work is not another program's
        while time.monotonic() < stop:
            pass
    t = threading.Thread(target=spin)
    t.start()
    own = ct.others_busy(0.5)
    t.join()
    neighbour = subprocess.Popen([sys.executable, "-c", SPIN.format(s=3)])
    try:
        time.sleep(0.5)
        other = ct.others_busy(1.0)
    finally:
        neighbour.kill()
    assert other >= 0.7 and other - own >= 0.5


@LINUX
def test_the_start_line_names_the_threads_and_a_busy_machine(monkeypatch, restore_threads):
    monkeypatch.setattr(ct, "others_busy", lambda *a: 0.1)
    assert ct.set_threads(1) == f"threads: 1 of {ct.cores()} cores" and torch.get_num_threads() == 1
    monkeypatch.setattr(ct, "others_busy", lambda *a: 1.0)
    line = ct.set_threads(2)
    assert line.startswith(f"threads: 2 of {ct.cores()} cores; other programs keep 1.0 of them busy")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert ct.set_threads(0).startswith("threads: 1 ")


@pytest.mark.parametrize("env,policy", [({}, "PASSIVE"), ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE")])
def test_trainers_set_passive_waits_before_torch_loads(env, policy):
    """The trainers import core.openmp first; it sets the policy only where torch is not loaded yet."""
    import os
    code = ("import core.openmp, os, sys; a = os.environ.get('OMP_WAIT_POLICY'); import torch; "
            "print(a, 'torch' in sys.modules)")
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True,
                         cwd=REPO, check=True).stdout.split()
    assert out == [policy, "True"]
    late = subprocess.run([sys.executable, "-c", "import torch, core.openmp, os; print(os.environ.get('OMP_WAIT_POLICY'))"],
                          env=base, capture_output=True, text=True, cwd=REPO, check=True).stdout.strip()
    assert late == "None"
    for trainer in ("train_pretrain", "train_full_sft", "train_lora", "train_dpo"):
        first = next(line for line in (REPO / "trainer" / f"{trainer}.py").read_text().splitlines()
                     if line.startswith(("import ", "from ")))
        assert first.startswith("import core.openmp"), trainer
