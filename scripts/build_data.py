"""`python scripts/build_data.py` runs pipelines/data_build/build.py (`python -m pipelines.data_build.build`), where its docs and --help are."""
import runpy

if __name__ == "__main__":
    runpy.run_module("pipelines.data_build.build", run_name="__main__", alter_sys=True)
