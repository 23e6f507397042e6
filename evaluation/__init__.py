"""Measuring models: benchmarks, behaviour tests (identity, task, chat suite) and their strict scorers."""
