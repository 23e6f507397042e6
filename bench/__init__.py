"""Speed benchmarks, each side by side with its reference, and the helpers they share."""
