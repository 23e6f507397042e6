"""Building the shipped data (dataset/*.jsonl, dataset/knowledge/) from pinned registry packages, one module per source."""
