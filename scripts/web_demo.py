"""`streamlit run scripts/web_demo.py` runs apps/web_demo.py afresh on every rerun, as Streamlit runs a script."""
import runpy

runpy.run_module("apps.web_demo", run_name="__main__")
