"""The command line's words for what fair means and how the removal is set: the goal's options
of ``fit``, the removal's options of ``fit`` without a goal, and ``--strength`` of ``predict``,
``evaluate`` and ``serve``. Choices and defaults come from the library (:mod:`ruleeraser.goal`,
:class:`ruleeraser.Eraser`), written as options (``equalized-odds`` for ``equalized_odds``).

Example
-------
>>> import argparse
>>> parser = argparse.ArgumentParser(prog="demo")
>>> add_goal_options(parser)
>>> args = parser.parse_args(["--constraint", "equalized-odds", "--max-gap", "0.02"])
>>> goal_from_args(args)
Goal(constraint='equalized_odds', max_gap=0.02, objective='balanced_accuracy', guard=True, \
confidence=0.9)
>>> goal_from_args(parser.parse_args([])) is None
True
"""

from __future__ import annotations

import argparse
import inspect
from typing import Any

from ruleeraser.goal import CONSTRAINTS, OBJECTIVES, Goal


def library_default(name: str) -> Any:
    """The default of :class:`ruleeraser.Eraser`'s parameter ``name``."""
    from ruleeraser.eraser import Eraser

    return inspect.signature(Eraser.__init__).parameters[name].default


def _option(value: str) -> str:
    return value.replace("_", "-")


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"a fraction in [0, 1) (0.02 is 2 points); got {text}")
    return value


def _strength(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"a finite number >= 0; got {text}")
    return value


def add_goal_options(parser: argparse.ArgumentParser) -> None:
    """``--constraint``, ``--max-gap``, ``--objective``, ``--no-guard`` and ``--confidence``."""
    defaults = Goal()
    group = parser.add_argument_group(
        "goal",
        "say what fair means and fit chooses the removal's settings on out-of-fold "
        "calibration rows (instead of --prior, --rule-scale and --strength); it warns when "
        "the calibration rows cannot promise the goal",
    )
    group.add_argument(
        "--constraint", choices=[_option(c) for c in CONSTRAINTS], metavar="NAME",
        help="the gap to bound: 'equalized-odds' (the reports' EqualOdds: per target class the "
        "accuracy gap between bias groups, averaged), 'equal-opportunity' (the positive "
        "class's gap alone) or 'demographic-parity' (the gap in each decision's rate)",
    )  # fmt: skip
    group.add_argument(
        "--max-gap", type=_fraction, metavar="FRACTION",
        help=f"the largest gap allowed, a fraction: 0.02 is 2 points (default "
        f"{defaults.max_gap:g} with --constraint)",
    )  # fmt: skip
    group.add_argument(
        "--objective", choices=[_option(o) for o in OBJECTIVES], metavar="NAME",
        help="what to keep best among the settings that meet the constraint: 'accuracy', "
        "'balanced-accuracy' (the mean of the classes' recalls) or 'average-group-accuracy' "
        f"(the mean over (target, bias) groups); default {_option(defaults.objective)}",
    )  # fmt: skip
    group.add_argument(
        "--no-guard", dest="guard", action="store_false",
        help="allow settings that leave a bias group's balanced accuracy below the model's by "
        "more than its standard error (levelling down; refused by default)",
    )  # fmt: skip
    group.add_argument(
        "--confidence", type=float, metavar="SHARE",
        help=f"the share of the expected gap's interval (default {defaults.confidence:g})",
    )  # fmt: skip


def goal_from_args(args: argparse.Namespace) -> Goal | None:
    """The :class:`Goal` the options say, or None without ``--constraint`` (``ValueError`` for
    a goal's option given without it)."""
    given = {
        "max_gap": args.max_gap,
        "objective": args.objective,
        "confidence": args.confidence,
    }
    given = {k: v for k, v in given.items() if v is not None}
    if args.constraint is None:
        extra = [f"--{_option(k)}" for k in given] + ([] if args.guard else ["--no-guard"])
        if extra:
            raise ValueError(f"{', '.join(extra)} need --constraint (the goal's gap)")
        return None
    if "objective" in given:
        given["objective"] = given["objective"].replace("-", "_")
    return Goal(args.constraint.replace("-", "_"), guard=args.guard, **given)


def add_removal_options(parser: argparse.ArgumentParser) -> None:
    """``--prior``, ``--rule-scale`` and ``--strength`` of ``fit`` without a goal, with the
    library's defaults."""
    from ruleeraser.removal import PRIORS

    prior = library_default("prior")
    parser.add_argument(
        "--prior", choices=PRIORS, default=prior,
        help=f"without a goal: 'balanced' (default {prior!r}, the paper's Eq. 19) also "
        "removes the class prior and makes the decisions class-balanced; 'keep' removes only "
        "the bias-dependent part, so the model keeps its class prior (on an imbalanced table "
        "it can close the gap by deciding the majority class for nearly everyone: see "
        "docs/goal.md)",
    )  # fmt: skip
    parser.add_argument(
        "--rule-scale", type=rule_scale, default=library_default("rule_scale"),
        metavar="fit|SCALE",
        help="without a goal: the size of each patch's bias-dependent part: 'fit' (default) "
        "chooses it on the calibration rows so that the groups' error rates match; 1 is the "
        "paper's patch",
    )  # fmt: skip
    parser.add_argument(
        "--strength", type=_strength, default=library_default("strength"), metavar="S",
        help="without a goal: how much of the patches is removed (default 1, the paper's; 0 "
        "leaves the model as it is)",
    )  # fmt: skip


def rule_scale(text: str) -> str | float:
    """``--rule-scale``: "fit" or a number (:class:`ruleeraser.Eraser` checks its range).

    >>> rule_scale("fit"), rule_scale("1")
    ('fit', 1.0)
    """
    return text if text == "fit" else float(text)


def add_strength_option(parser: argparse.ArgumentParser) -> None:
    """``--strength`` of the commands that apply a saved eraser: overrides its strength."""
    parser.add_argument(
        "--strength", type=_strength, metavar="S",
        help="override the eraser's strength by hand (0: the model itself; default: the "
        "strength saved, the goal's choice where it has one)",
    )  # fmt: skip


def with_strength(eraser: Any, strength: float | None) -> Any:
    """``eraser`` with its removal's strength replaced by ``strength`` (None: unchanged)."""
    return eraser if strength is None else eraser.set_strength(strength)


def describe_removal(eraser: Any) -> list[str]:
    """The removal a fitted eraser applies, and its goal's figures, in words (one per line)."""
    from ruleeraser.report_files import removal_in_force

    shown = removal_in_force(eraser)
    offset = ", ".join(f"{o:+.2f}" for o in shown["offset"])
    lines = [
        f"removal: strength {shown['strength']:g}, prior {eraser.removal_.prior!r}, rule scale "
        f"{[round(s, 3) for s in shown['rule_scale']]}, class offset [{offset}]"
    ]
    goal = shown["goal"]
    if goal is not None:
        chosen = eraser.goal_fit_
        low, high = goal["interval"]
        lines.append(
            f"goal: {_option(goal['constraint'])} gap <= {100 * goal['max_gap']:g} points at the "
            f"best {_option(goal['objective'])}, guard {'on' if goal['guard'] else 'off'}: "
            f"{'met' if chosen.met else 'not met'} on the out-of-fold calibration rows; "
            f"expected gap {chosen.expected_gap:.1f} points ({100 * goal['confidence']:g}% "
            f"interval {low:.1f}-{high:.1f}), {_option(goal['objective'])} "
            f"{chosen.objective:.1f}, {chosen.changed:.1f}% of the model's decisions changed"
        )
    return lines
