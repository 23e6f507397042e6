"""`python scripts/bench_compile.py` runs bench/compile.py (`python -m bench.compile`), where its docs and --help are."""
import runpy

if __name__ == "__main__":
    runpy.run_module("bench.compile", run_name="__main__", alter_sys=True)
