"""`python scripts/bench_train.py` runs bench/padding.py (`python -m bench.padding`), where its docs and --help are."""
import runpy

if __name__ == "__main__":
    runpy.run_module("bench.padding", run_name="__main__", alter_sys=True)
