"""`python scripts/bench_busy.py` runs bench/busy.py (`python -m bench.busy`), where its docs and --help are."""
import runpy

if __name__ == "__main__":
    runpy.run_module("bench.busy", run_name="__main__", alter_sys=True)
