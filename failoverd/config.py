"""config: not yet built."""
