"""`python scripts/bench_serve.py` runs bench/serve.py (`python -m bench.serve`), where its docs and --help are."""
import runpy

if __name__ == "__main__":
    runpy.run_module("bench.serve", run_name="__main__", alter_sys=True)
