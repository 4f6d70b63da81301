"""sim.inventory: not yet built."""
