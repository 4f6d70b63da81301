"""decide: not yet built."""
