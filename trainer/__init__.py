"""TinyMind trainers: thin stage entry points over one shared loop (trainer/loop.py)."""
