"""The ``ruleeraser`` command: ``fit``, ``predict``, ``evaluate``, ``serve`` and ``reproduce``.

This module imports only the standard library: each command's modules (and torch) load inside
:func:`main`, so that Ctrl-C at any moment of a run, its imports included, ends it with one
line and the status 130.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser; each command's ``run`` is its ``args.run``.

    >>> args = build_parser().parse_args(["fit", "--model", "m.skops", "--data", "c.csv",
    ...                                   "--target", "y", "--bias", "sex", "--out", "eraser"])
    >>> args.command, args.bias, args.overwrite
    ('fit', ['sex'], False)
    """
    from ruleeraser import __version__
    from ruleeraser.cli import evaluate, fit, predict
    from ruleeraser.experiments.runners import add_reproduce_parsers
    from ruleeraser.serve import add_serve_parser

    parser = argparse.ArgumentParser(
        prog="ruleeraser",
        description="Remove a deployed classifier's biased rule at inference time.",
    )
    parser.add_argument("--version", action="version", version=f"ruleeraser {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    reproduce = commands.add_parser("reproduce", help="reproduce an experiment of the paper")
    experiments = reproduce.add_subparsers(dest="experiment", required=True)
    add_reproduce_parsers(experiments)
    for command in (fit, predict, evaluate):
        command.add_parser(commands)
    add_serve_parser(commands)
    return parser


#: Exit statuses: done; the run failed on the way (the model's endpoint, its query budget);
#: a user error (a bad option, table, model or eraser file, named in one line; argparse's
#: usage errors have it too); interrupted (Ctrl-C).
EXIT_DONE, EXIT_FAILED, EXIT_USER_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
#: The extra that installs each optional module the commands import.
EXTRAS = {
    "pandas": "cli", "pyarrow": "cli", "matplotlib": "cli", "httpx": "http",
    "onnxruntime": "onnx", "skops": "skops", "sklearn": "skops", "fastapi": "serve",
    "uvicorn": "serve", "aiohttp": "serve",
}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status.

    Parameters
    ----------
    argv: the arguments after ``ruleeraser``; None: ``sys.argv[1:]``.

    Returns
    -------
    :data:`EXIT_DONE` (0); :data:`EXIT_USER_ERROR` (2) for a bad option, table, model or
    eraser file, with one line on stderr naming it and no traceback; :data:`EXIT_FAILED` (1)
    when the run fails on the way (the model's endpoint, the query budget);
    :data:`EXIT_INTERRUPTED` (130) on Ctrl-C. Warnings print as one line each.

    Example
    -------
    >>> import contextlib, io
    >>> err = io.StringIO()
    >>> with contextlib.redirect_stderr(err):
    ...     status = main(["predict", "--eraser", "nowhere", "--model", "model.skops",
    ...                    "--data", "rows.csv", "--out", "fair.csv"])
    >>> status, err.getvalue()
    (2, 'ruleeraser predict: error: no model file model.skops\\n')
    """
    command = ""
    try:
        args = build_parser().parse_args(argv)
        command = args.command
        if getattr(args, "seeds", 1) < 1:
            print("ruleeraser: --seeds must be at least 1", file=sys.stderr)
            return EXIT_USER_ERROR
        return _run(args)
    except KeyboardInterrupt as exc:  # at any moment, the imports of the command included
        _error(command, f"interrupted{f': {exc}' if str(exc) else ''}")
        return EXIT_INTERRUPTED


def _run(args: argparse.Namespace) -> int:
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning(args.command)
        try:
            return args.run(args)
        except RuntimeError as exc:
            _error(args.command, exc)
            return EXIT_FAILED
        except (ValueError, TypeError, OSError, ImportError) as exc:
            _error(args.command, _with_install_hint(exc))
            return EXIT_USER_ERROR


def run() -> None:
    """The ``ruleeraser`` executable: exit with :func:`main`'s status. After Ctrl-C the exit
    handlers run (thread pools joined, a local Ray or Dask cluster stopped, temporary files
    removed) but the interpreter does not tear down every module one by one, which takes
    most of a second with torch loaded: the user asked to stop, and everything of the run
    that had to be kept (the answer cache, the files) was closed before :func:`main`
    returned."""
    status = main()
    if status != EXIT_INTERRUPTED:
        sys.exit(status)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _one_line(text: object) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _error(command: str, exc: BaseException | str) -> None:
    text = _one_line(exc) or type(exc).__name__
    print(f"ruleeraser{f' {command}' if command else ''}: error: {text}", file=sys.stderr)


def _with_install_hint(exc: BaseException) -> BaseException | str:
    name = (getattr(exc, "name", None) or "").split(".")[0]
    if not isinstance(exc, ModuleNotFoundError) or name not in EXTRAS or "pip " in str(exc):
        return exc
    return f"{exc} (pip install 'rule-eraser[{EXTRAS[name]}]')"


def _one_line_warning(command: str) -> Any:
    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        print(f"ruleeraser {command}: warning: {_one_line(message)}", file=sys.stderr)

    return show
