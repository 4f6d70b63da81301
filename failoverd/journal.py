"""journal: not yet built."""
