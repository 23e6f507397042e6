"""`python scripts/bench_eval.py` runs bench/evaluator.py (`python -m bench.evaluator`), where its docs and --help are."""
import runpy

if __name__ == "__main__":
    runpy.run_module("bench.evaluator", run_name="__main__", alter_sys=True)
