"""hooks: operator hooks around a move (being built)."""
