"""What every folder shares: the user-error type, safe (atomic) file writes, output ownership (no output is an input; one owner per output), the cache folder and the one-line CLI wrapper."""
