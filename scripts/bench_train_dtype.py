"""`python scripts/bench_train_dtype.py` runs bench/train_dtype.py (`python -m bench.train_dtype`), where its docs and --help are."""
import runpy

if __name__ == "__main__":
    runpy.run_module("bench.train_dtype", run_name="__main__", alter_sys=True)
