"""How many threads torch computes with: as many as there are cores that other programs leave free.

torch runs each operation on all the machine's cores by default (OpenMP), and every operation waits for
its slowest thread. When another program keeps a core busy, the thread that shares that core gets a part
of it, and the whole operation waits on that part: measured on this 2-core box (docs/training.md, "Busy
machines"), the README's LoRA command fell much further than a fair share. One thread per free core runs
at the full speed of the cores it has.

    from core.threads import ThreadPolicy
    policy = ThreadPolicy(requested=0)     # --threads: 0 = from the free cores, re-checked as the run goes
    print(policy.start())                  # "threads: 1 of 2 cores (other programs keep 1.0 busy; ...)"
    policy.adapt()                         # between steps: follow the other programs' load

Free cores are read from /proc/stat over a short window, this process's own CPU time taken out
(/proc/self/stat), so the run's own threads never count as another program's. Off Linux, or with
OMP_NUM_THREADS set, or --threads N, the count is fixed.
"""
import os
import time

import torch

SAMPLE_S = 0.3                  # the window the free cores are measured over
ADAPT_EVERY_S = 30.0            # how often a run looks again
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_times():
    """(all cores' busy seconds, this process's CPU seconds) now, or None off Linux."""
    try:
        fields = open("/proc/stat").readline().split()[1:]
        own = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    values = [int(v) for v in fields]
    busy = sum(values) - values[3] - (values[4] if len(values) > 4 else 0)     # less idle and iowait
    return busy / TICKS, (int(own[11]) + int(own[12])) / TICKS                  # utime + stime


def others_busy(sample_s=SAMPLE_S, since=None):
    """Cores' worth of CPU that other processes used over the window (from `since`, a (time, cpu_times())
    pair, or over a fresh sample_s window) -> float, or None off Linux."""
    if since is None:
        since = (time.monotonic(), cpu_times())
        time.sleep(sample_s)
    t0, first = since
    last = cpu_times()
    if first is None or last is None:
        return None
    elapsed = max(time.monotonic() - t0, 1e-3)
    return max(0.0, ((last[0] - first[0]) - (last[1] - first[1])) / elapsed)


def cores():
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads_for(busy, n_cores):
    """One thread per core the others leave free (at least one): a core counts as taken when the others
    keep more than a third of it busy."""
    return max(1, min(n_cores, n_cores - int(busy + 2 / 3)))


class ThreadPolicy:
    """--threads N (N > 0), OMP_NUM_THREADS, or the free cores, re-measured every ADAPT_EVERY_S."""

    def __init__(self, requested=0):
        self.fixed = requested or int(os.environ.get("OMP_NUM_THREADS") or 0) or None
        self.n_cores, self.since = cores(), None

    def start(self):
        """Set the count -> the line a run prints about it."""
        if self.fixed:
            torch.set_num_threads(self.fixed)
            return f"threads: {self.fixed} (of {self.n_cores} cores; --threads 0 follows the free cores)"
        busy = others_busy()
        if busy is None:
            self.fixed = torch.get_num_threads()
            return f"threads: {self.fixed}"
        torch.set_num_threads(threads_for(busy, self.n_cores))
        self.since = (time.monotonic(), cpu_times())
        return (f"threads: {torch.get_num_threads()} of {self.n_cores} cores (other programs keep {busy:.1f} "
                "busy; re-checked as the run goes; --threads N fixes it)")

    def adapt(self):
        """Between steps: once ADAPT_EVERY_S has passed, follow the other programs' load -> the new count
        when it changed, else None."""
        if self.fixed or self.since is None or time.monotonic() - self.since[0] < ADAPT_EVERY_S:
            return None
        busy = others_busy(since=self.since)
        self.since = (time.monotonic(), cpu_times())
        n = threads_for(busy, self.n_cores)
        if n == torch.get_num_threads():
            return None
        torch.set_num_threads(n)
        return n
