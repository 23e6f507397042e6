"""`python scripts/bench_generate.py` runs bench/generate.py (`python -m bench.generate`), where its docs and --help are."""
import runpy

if __name__ == "__main__":
    runpy.run_module("bench.generate", run_name="__main__", alter_sys=True)
