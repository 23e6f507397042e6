"""Chat with your trained TinyMind models in the browser: streamlit run scripts/web_demo.py (the app is apps/web_demo.py)."""
from apps.web_demo import run

run()
