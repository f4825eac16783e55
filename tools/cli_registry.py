"""`thingledger` commands for the registry area (docs/IDENTITY.md)."""

import argparse


def register(sub: argparse._SubParsersAction, data: argparse.ArgumentParser) -> None:
    """Add this area's subcommands; `data` is the parent parser with --data-dir."""
