"""sim.server: the OVH API simulator (being built)."""

from pathlib import Path


def main(inventory: Path | None, listen: str) -> int:
    raise NotImplementedError(f"fake-api {inventory} {listen}: being built")
