"""`python scripts/bench_dpo.py` runs bench/dpo.py (`python -m bench.dpo`), where its docs and --help are."""
import runpy

if __name__ == "__main__":
    runpy.run_module("bench.dpo", run_name="__main__", alter_sys=True)
