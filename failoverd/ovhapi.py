"""ovhapi: not yet built."""
