"""supervisor: not yet built."""
