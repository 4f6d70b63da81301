"""client: CLI commands that talk to the running daemon (being built)."""

import argparse


def main(args: argparse.Namespace) -> int:
    raise NotImplementedError(f"failoverd {args.command}: being built")
