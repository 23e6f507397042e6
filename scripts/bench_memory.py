"""`python scripts/bench_memory.py` runs bench/memory.py (`python -m bench.memory`), where its docs and --help are."""
import runpy

if __name__ == "__main__":
    runpy.run_module("bench.memory", run_name="__main__", alter_sys=True)
