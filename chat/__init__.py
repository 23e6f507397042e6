"""The chat engine: history, personas, retrieval over documents and long-term memory, for every app and the server."""
