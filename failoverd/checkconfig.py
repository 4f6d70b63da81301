"""checkconfig: `failoverd check-config` (being built)."""

from pathlib import Path


def main(config: Path, *, online: bool) -> int:
    raise NotImplementedError(f"check-config {config} online={online}: being built")
