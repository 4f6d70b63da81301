"""app: the daemon's composition root (being built)."""

from pathlib import Path


def run(config: Path) -> int:
    raise NotImplementedError(f"failoverd run {config}: the daemon is being built")
