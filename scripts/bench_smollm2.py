"""`python scripts/bench_smollm2.py` runs bench/smollm2.py (`python -m bench.smollm2`), where its docs and --help are."""
import runpy

if __name__ == "__main__":
    runpy.run_module("bench.smollm2", run_name="__main__", alter_sys=True)
