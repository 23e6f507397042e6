"""Serving models over HTTP: engine.py (the models of out/, one decoding batch per model), api.py (the
OpenAI-compatible app); scripts/serve_openai_api.py runs it."""
