"""`python scripts/study.py` runs pipelines/study.py (`python -m pipelines.study`), where its docs and --help are."""
import runpy

if __name__ == "__main__":
    runpy.run_module("pipelines.study", run_name="__main__", alter_sys=True)
