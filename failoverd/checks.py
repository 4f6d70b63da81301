"""checks: not yet built."""
