"""core/threads.py: torch's thread count follows the cores other programs leave free; the other programs'
load is measured from /proc (this process's own CPU time left out), --threads N and OMP_NUM_THREADS fix it."""
import subprocess
import sys
import threading
import time

import pytest
import torch

import core.threads as ct


@pytest.fixture
def restore_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("busy,cores,threads", [(0.0, 2, 2), (0.2, 2, 2), (0.5, 2, 1), (1.0, 2, 1), (2.0, 2, 1),
                                                (1.0, 8, 7), (3.4, 8, 4), (0.0, 1, 1)])
def test_one_thread_per_free_core(busy, cores, threads):
    assert ct.threads_for(busy, cores) == threads


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_busy_neighbour_is_seen_and_this_process_is_not():
    stop = time.monotonic() + 1.0

    def spin():                               # this process's own work is not another program's
        while time.monotonic() < stop:
            pass
    t = threading.Thread(target=spin)
    t.start()
    own = ct.others_busy(0.5)
    t.join()
    neighbour = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time() + 3\nwhile time.time() < t: pass"])
    try:
        time.sleep(0.5)
        other = ct.others_busy(1.0)
    finally:
        neighbour.kill()
    assert other >= 0.7 and other - own >= 0.5


def test_the_policy_follows_the_load_unless_fixed(monkeypatch, restore_threads):
    loads = iter([0.0, 1.0, 1.0, 0.1])
    monkeypatch.setattr(ct, "others_busy", lambda *a, **k: next(loads))
    monkeypatch.setattr(ct, "cores", lambda: 2)
    policy = ct.ThreadPolicy(0)
    assert "threads: 2 of 2 cores" in policy.start() and torch.get_num_threads() == 2
    assert policy.adapt() is None                                  # not yet: 30 s between looks
    policy.since = (policy.since[0] - ct.ADAPT_EVERY_S, policy.since[1])
    assert policy.adapt() == 1 and torch.get_num_threads() == 1   # a neighbour took a core
    policy.since = (policy.since[0] - ct.ADAPT_EVERY_S, policy.since[1])
    assert policy.adapt() is None                                  # still there
    policy.since = (policy.since[0] - ct.ADAPT_EVERY_S, policy.since[1])
    assert policy.adapt() == 2                                     # gone
    fixed = ct.ThreadPolicy(1)
    assert fixed.start().startswith("threads: 1") and fixed.adapt() is None
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert ct.ThreadPolicy(0).start().startswith("threads: 1")
