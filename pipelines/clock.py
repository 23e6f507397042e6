"""The quickstart's time budget: what each step costs besides its training, the clock that gives each
training stage its --max_minutes, and the share of each test file the tests after training can ask in
the time the budget leaves them. Library module for scripts/quickstart.py.
"""
import math
import time
from pathlib import Path

from trainer.runlog import read_rows

# seconds each step costs besides its training on an idle 2-core CPU (start-up, data, loading, final
# validation and save); a slower machine is planned for by the measured slowdown
OVERHEAD = {"pretrain": 20, "full_sft": 15, "scratch_lora": 10, "import": 25, "lora": 40}
# the tests after training on an idle 2-core CPU: (seconds to start and load the model, seconds to answer
# every question of the full test files: 44 identity questions, and SmolLM2's 2 x 32 music ones); their
# sums are what the idle run of docs/quickstart.md took (8, 8, 55, 45 s; 1m38s of tests in all)
TESTS = {"eval_sft": (5, 3), "eval_scratch": (5, 3), "eval_base": (12, 43), "eval_lora": (12, 33)}
OVERHEAD.update({step: start + answers for step, (start, answers) in TESTS.items()})
# a busy machine's tests get at most this part of the budget (asking smaller samples), so that training
# keeps its time; idle, the full tests take 13% of the 15 minutes
TEST_SHARE = 0.15
MIN_SAMPLE = 0.25          # the smallest sample the tests ask: a quarter of each test file (11 of 44 questions)
# training tokens/s of the CPU stages on an idle 2-core AVX512-BF16 CPU (bfloat16): what a slowdown is against
IDLE_TOK_S = {"pretrain": 6000, "lora": 300}
# steps a stage needs before its result means anything: half of what the idle 15-minute run of
# docs/quickstart.md gets (pretrain 351, full SFT 368, lora_identity 230, lora_music 117 steps, after which
# SmolLM2 names itself on 91% of the identity questions; 27 steps gave 55%, 18 steps 7%)
MIN_STEPS = {"pretrain": 175, "full_sft": 184, "scratch_lora": 115, "lora": 58}


def fmt_time(s):
    return f"{int(s // 60)}m{int(s % 60):02d}s" if s >= 60 else f"{s:.0f}s"


def sample_size(n, fraction):
    """How many of a test file's n questions a test asks at `fraction` of each file (at least one)."""
    return n if fraction >= 1 else max(1, min(n, math.ceil(n * fraction)))


class Clock:
    """The budget: each training stage gets its share of what is left once the remaining steps'
    overheads are set aside, each times the slowdown seen so far: the larger of the overheads the finished
    steps took against their idle estimate, and the idle training speed against the one the last training
    stage logged (a machine with one core taken trains and generates 3-4x slower with two threads). The
    tests are set aside in full, but on a machine so slow that they would take more than TEST_SHARE of the
    budget, for that share only: they then ask a smaller sample of each test file (test_fraction)."""

    def __init__(self, minutes, shares, steps):
        self.budget_s, self.shares, self.todo = minutes * 60, dict(shares), list(steps)
        self.end = time.time() + self.budget_s
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

    def tests_cost(self, fraction):
        """Seconds the remaining tests take asking `fraction` of each test file, at the slowdown seen."""
        return sum(TESTS[s][0] + TESTS[s][1] * fraction for s in self.todo if s in TESTS) * self.slowdown

    def test_fraction(self, seconds):
        """The share of each test file the remaining tests can ask within `seconds` (MIN_SAMPLE to 1)."""
        start, full = self.tests_cost(0.0), self.tests_cost(1.0)
        if full <= seconds or full == start:
            return 1.0
        return max(MIN_SAMPLE, (seconds - start) / (full - start))

    def slice(self, stage):
        """--max_minutes for `stage`: its share of the time left after the reserve (the other steps'
        overheads and the tests, at most TEST_SHARE of the budget unless their smallest samples need more),
        at least 3 seconds."""
        others = sum(OVERHEAD.get(s, 0) for s in self.todo if s not in TESTS) * self.slowdown
        tests = self.tests_cost(self.test_fraction(TEST_SHARE * self.budget_s))
        left = self.end - time.time() - others - tests
        return max(0.05, left * self.shares[stage] / sum(self.shares.values()) / 60)
