"""logs: not yet built."""
