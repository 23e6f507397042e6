"""Chatting with a model: the conversation history and the terminal chat (eval_model.py). The web demo
(scripts/web_demo.py) uses the same history rule and model.generate's prompt builder and sampling loop.
"""
