"""The ``ruleeraser`` command: ``fit``, ``predict``, ``evaluate``, ``serve`` and ``reproduce``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ruleeraser.cli import evaluate, fit, predict


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser; each command's ``run`` is its ``args.run``."""
    from ruleeraser import __version__
    from ruleeraser.experiments.frontier import add_frontier_parser
    from ruleeraser.experiments.table1 import add_table1_parser
    from ruleeraser.experiments.table2 import add_table2_parser
    from ruleeraser.experiments.table3 import add_table3_parser
    from ruleeraser.experiments.table4 import add_table4_parser
    from ruleeraser.serve import add_serve_parser

    parser = argparse.ArgumentParser(
        prog="ruleeraser",
        description="Remove a deployed classifier's biased rule at inference time.",
    )
    parser.add_argument("--version", action="version", version=f"ruleeraser {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    reproduce = commands.add_parser("reproduce", help="reproduce an experiment of the paper")
    experiments = reproduce.add_subparsers(dest="experiment", required=True)
    add_table2_parser(experiments)
    add_table1_parser(experiments)
    add_table3_parser(experiments)
    add_table4_parser(experiments)
    add_frontier_parser(experiments)
    for command in (fit, predict, evaluate):
        command.add_parser(commands)
    add_serve_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the exit status (0 done, 1 failed, 2 bad usage)."""
    args = build_parser().parse_args(argv)
    if getattr(args, "seeds", 1) < 1:
        print("ruleeraser: --seeds must be at least 1", file=sys.stderr)
        return 2
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError, RuntimeError, ImportError) as exc:
        print(f"ruleeraser {args.command}: error: {exc}", file=sys.stderr)
        return 1
