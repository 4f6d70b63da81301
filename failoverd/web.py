"""web: not yet built."""
