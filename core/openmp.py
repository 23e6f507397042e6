"""Training processes: OpenMP's idle threads sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE), set before
torch loads its OpenMP runtime, so the trainers import this module first.

torch computes each operation on every core, and between operations libgomp's threads spin, waiting for the
next. Alone on the machine that costs nothing; beside another busy program the spinning threads take the
cores the work needs. Measured on this 2-core box (the README's LoRA on SmolLM2, `python
scripts/bench_busy.py`, docs/training.md "Busy machines"): with one busy neighbour process the run kept 33%
of its idle tokens/s, 62% with passive waits (a fair share: 67%); with two, 24% against 44% (fair: 50%);
alone, the same speed either way (335 tok/s; the small preset's too; a tiny test-sized model, all small
operations, ran a third slower). Not for decoding, whose many small operations wait
far more often (int8 SmolLM2 decoding fell from 85 to 45 tokens/s): train_grpo.py, which decodes its
rollouts, and the inference commands leave the policy alone. An OMP_WAIT_POLICY the user set is kept.

    import core.openmp  # noqa: F401  (first: before anything imports torch)
"""
import os
import sys

if "torch" not in sys.modules:           # too late once torch is loaded (in-process runs, tests): nothing
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
