"""The ``ruleeraser reproduce`` experiments: one table of runners.

A runner is a module of :mod:`ruleeraser.experiments` with

- ``HELP``: one line for ``ruleeraser reproduce --help``, with what a full run costs;
- ``DESCRIPTION``: what it does, for ``ruleeraser reproduce NAME --help``;
- ``add_arguments(parser)``: its options;
- ``run(args) -> int``: the command, writing its results to ``--out``.

Runners share their set-up through :mod:`ruleeraser.experiments.setup` and their outputs
through :mod:`ruleeraser.experiments.results`, never through each other. Importing a runner
imports no pandas, scikit-learn or matplotlib: they load when a runner runs.

Example
-------
>>> import argparse
>>> parser = argparse.ArgumentParser(prog="reproduce")
>>> add_reproduce_parsers(parser.add_subparsers(dest="experiment"))
>>> args = parser.parse_args(["table2", "--seeds", "2"])
>>> args.seeds, args.run is RUNNERS["table2"].run
(2, True)
"""

from __future__ import annotations

import argparse
from typing import Protocol

from ruleeraser.experiments import (
    attention,
    backbones,
    calibration_size,
    cross_source,
    frontier,
    severity,
    table1,
    table2,
    table3,
    table4,
    tsne,
)


class Runner(Protocol):
    """What a runner module provides (see the module's docstring)."""

    HELP: str
    DESCRIPTION: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


#: ``ruleeraser reproduce NAME`` -> its runner, in the order ``--help`` lists them.
RUNNERS: dict[str, Runner] = {
    "table1": table1,
    "table2": table2,
    "table3": table3,
    "table4": table4,
    "frontier": frontier,
    "calibration-size": calibration_size,
    "severity": severity,
    "backbones": backbones,
    "cross-source": cross_source,
    "attention": attention,
    "tsne": tsne,
}


def add_reproduce_parsers(experiments: argparse._SubParsersAction) -> None:
    """Register every runner of :data:`RUNNERS` under ``ruleeraser reproduce``.

    Parameters
    ----------
    experiments: the ``reproduce`` parser's sub-parsers; each runner's ``run`` becomes its
        parser's ``run`` default.
    """
    for name, runner in RUNNERS.items():
        parser = experiments.add_parser(name, help=runner.HELP, description=runner.DESCRIPTION)
        runner.add_arguments(parser)
        parser.set_defaults(run=runner.run)
