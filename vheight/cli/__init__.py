"""The ``vheight`` command line.

Each subcommand lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``handler`` (a
callable taking the parsed namespace and returning the exit code).  Exit
codes: 0 success, 1 when some inputs failed (said on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from vheight import __version__
from vheight.errors import VHeightError

__all__ = ["main", "build_parser"]

# Subcommand modules, in the order ``vheight --help`` lists them.
COMMANDS: tuple[str, ...] = (
    "info",
    "measure",
    "compare",
    "agreement",
    "batch",
    "refine",
    "report",
    "sr",
    "pacs",
    "phantom",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vheight",
        description="Vertebral body height morphometry on lateral spine radiographs.",
    )
    parser.add_argument("--version", action="version", version=f"vheight {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"vheight.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (also used by the console script)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except VHeightError as exc:
        print(f"vheight {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"vheight {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
