"""`python scripts/bench_grpo.py` runs bench/grpo.py (`python -m bench.grpo`), where its docs and --help are."""
import runpy

if __name__ == "__main__":
    runpy.run_module("bench.grpo", run_name="__main__", alter_sys=True)
