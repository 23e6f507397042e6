"""`python scripts/bench_select.py` runs bench/select.py (`python -m bench.select`), where its docs and --help are."""
import runpy

if __name__ == "__main__":
    runpy.run_module("bench.select", run_name="__main__", alter_sys=True)
