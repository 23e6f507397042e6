"""`python scripts/quickstart.py` runs pipelines/quickstart.py (`python -m pipelines.quickstart`), where its docs and --help are."""
import runpy

if __name__ == "__main__":
    runpy.run_module("pipelines.quickstart", run_name="__main__", alter_sys=True)
