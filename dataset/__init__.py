"""Reading, validating and batching training data; the shipped JSONL data lives beside the code (SOURCES.md)."""
