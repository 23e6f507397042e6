"""Rewards for reinforcement learning: plain functions (completions, their records) -> one float each."""
