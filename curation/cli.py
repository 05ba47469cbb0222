"""The ``curate`` command.

Its subcommands arrive with the curation issue; for now it prints its help.
"""

from __future__ import annotations

import argparse

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    parser = argparse.ArgumentParser(
        prog="curate",
        description="Combine, filter, split and publish harvest datasets "
        "(subcommands arrive with the curation and remotes issues).",
    )
    parser.parse_args(argv)
    parser.print_help()
