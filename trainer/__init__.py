"""The train_*.py stage entry points (MiniMind's names) over one training loop and its parts."""
