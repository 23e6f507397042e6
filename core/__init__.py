"""What every folder shares: the user-error type, safe (atomic) file writes, the cache folder and the one-line CLI wrapper."""
