"""Serving models over HTTP: the engine (one decoding batch per model) and the OpenAI-compatible API."""
