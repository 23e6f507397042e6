"""`python scripts/bench_lora.py` runs bench/lora.py (`python -m bench.lora`), where its docs and --help are."""
import runpy

if __name__ == "__main__":
    runpy.run_module("bench.lora", run_name="__main__", alter_sys=True)
