"""torch's thread count for a run (--threads), and the line that says how busy the machine is.

torch computes on every core by default. Beside another busy program a run gets its share of the cores;
what made a busy machine cost far more than that share was OpenMP's threads spinning while they wait
(core/openmp.py sets them to sleep in the trainers). Measured on this 2-core box (`python
scripts/bench_busy.py`, docs/training.md "Busy machines"), the README's LoRA with passive waits kept 62% of
its idle tokens/s beside one busy neighbour process on both cores, 61% on one thread, and 44% against 39%
beside two: fewer threads than cores gains nothing, so the count stays at every core unless --threads (or OMP_NUM_THREADS) says otherwise. The start line says how many cores other
programs keep busy, read from /proc/stat over a short window with this process's own CPU time taken out,
so that a slow run on a busy machine says why.

    from core.threads import set_threads
    print(set_threads(0))     # "threads: 2 of 2 cores; other programs keep 1.0 busy (...)"
"""
import os
import time

import torch

SAMPLE_S = 0.3                  # the window the other programs' load is measured over
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_times():
    """(all cores' busy seconds, this process's CPU seconds) now, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    values = [int(v) for v in fields]
    busy = sum(values) - values[3] - (values[4] if len(values) > 4 else 0)     # less idle and iowait
    return busy / TICKS, (int(own[11]) + int(own[12])) / TICKS                  # utime + stime


def others_busy(sample_s=SAMPLE_S):
    """Cores' worth of CPU that other processes used over a sample_s window -> float, or None off Linux."""
    t0, first = time.monotonic(), cpu_times()
    time.sleep(sample_s)
    last = cpu_times()
    if first is None or last is None:
        return None
    return max(0.0, ((last[0] - first[0]) - (last[1] - first[1])) / max(time.monotonic() - t0, 1e-3))


def cores():
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def set_threads(requested=0):
    """--threads N (N > 0) or OMP_NUM_THREADS, else torch's default (every core) -> the line a run prints."""
    n = requested or int(os.environ.get("OMP_NUM_THREADS") or 0)
    if n:
        torch.set_num_threads(n)
    line = f"threads: {torch.get_num_threads()} of {cores()} cores"
    busy = others_busy()
    if busy is not None and busy >= 0.5:
        line += (f"; other programs keep {busy:.1f} of them busy: expect a share of the idle speed "
                 "(docs/training.md, \"Busy machines\")")
    return line
