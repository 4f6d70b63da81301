"""preflight: not yet built."""
