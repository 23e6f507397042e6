"""The quickstart's time budget: what each step costs besides its training, and the clock that gives
each training stage its --max_minutes. Library module for scripts/quickstart.py.
"""
import time
from pathlib import Path

from trainer.runlog import read_rows

# seconds each step costs besides its training on an idle 2-core CPU (start-up, data, loading, final
# validation and save; the tests in full); a slower machine is planned for by the measured slowdown
OVERHEAD = {"pretrain": 20, "full_sft": 15, "scratch_lora": 10, "import": 25, "lora": 40, "eval_sft": 8,
            "eval_scratch": 8, "eval_base": 55, "eval_lora": 45}
# training tokens/s of the CPU stages on an idle 2-core AVX512-BF16 CPU (bfloat16): what a slowdown is against
IDLE_TOK_S = {"pretrain": 6000, "lora": 300}

def fmt_time(s):
    return f"{int(s // 60)}m{int(s % 60):02d}s" if s >= 60 else f"{s:.0f}s"


class Clock:
    """The budget: each training stage gets its share of what is left once the remaining steps'
    overheads are set aside, each times the slowdown seen so far: the larger of the overheads the finished
    steps took against their idle estimate, and the idle training speed against the one the last training
    stage logged (a machine with one core taken trains and generates 3-4x slower with two threads)."""

    def __init__(self, minutes, shares, steps):
        self.end, self.shares, self.todo = time.time() + minutes * 60, dict(shares), list(steps)
        self.seen = [0.0, 0.0]                   # overhead seconds taken, and their idle estimate
        self.speed_ratio = 1.0

    @property
    def slowdown(self):
        overheads = self.seen[0] / self.seen[1] if self.seen[1] else 1.0
        return min(5.0, max(1.0, overheads, self.speed_ratio))

    def observe(self, stage, log):
        """The training speed a stage's log shows (its median tokens/s) against the idle one (IDLE_TOK_S)."""
        rates = sorted(r["tok_per_s"] for r in read_rows(log) if "tok_per_s" in r) if Path(log).is_file() else []
        if stage in IDLE_TOK_S and rates:
            self.speed_ratio = IDLE_TOK_S[stage] / max(1, rates[len(rates) // 2])

    def done(self, step, seconds=None, trained_s=0.0):
        """Step `step` is over (seconds: how long it ran, trained_s of them training; None: reused)."""
        if step in self.todo:
            self.todo.remove(step)
            if seconds is not None:
                self.seen = [self.seen[0] + max(0.0, seconds - trained_s), self.seen[1] + OVERHEAD[step]]
        self.shares.pop(step, None)

    def slice(self, stage):
        """--max_minutes for `stage`: its share of the time left after the reserve, at least 3 seconds."""
        reserve = sum(OVERHEAD.get(s, 0) for s in self.todo) * self.slowdown
        left = self.end - time.time() - reserve
        return max(0.05, left * self.shares[stage] / sum(self.shares.values()) / 60)
