"""How long an eraser takes to fit, on idle cores and beside two busy-looping processes.

For each dataset (COMPAS, LSAC: Table II's splits and vanilla deployed MLP) and seed, times
``Eraser(model, random_state=seed).fit`` on the calibration rows (the deployed model's
training is not timed; one untimed fit first warms up). Each fit runs twice: with the thread
count chosen for the patch's size (``n_threads=None``, the default) and on all the caller's
torch threads (``n_threads=torch.get_num_threads()``, how patches trained before). Then the
same again with two busy-looping processes beside it, which the benchmark starts and stops.
Prints seconds per seed, mean ± std, and busy / alone ratios. The load average printed at the
start tells whether the machine was idle.

``--steps`` instead times single training steps of patches of several sizes on one thread
and on all threads, idle and busy, beside the floating-point operations per step that
:func:`ruleeraser.training.choose_threads` compares with ``MIN_THREADED_STEP_FLOPS``.

Usage::

    python benchmarks/fit_speed.py                  # 5 seeds, COMPAS and LSAC
    python benchmarks/fit_speed.py --steps
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from ruleeraser import Eraser
from ruleeraser.experiments.datasets import load_dataset, split_dataset
from ruleeraser.experiments.deployed import predict_proba, train_deployed
from ruleeraser.patch import build_patch, default_batch_size
from ruleeraser.training import MIN_THREADED_STEP_FLOPS, choose_threads, step_flops


@contextmanager
def busy_loops(n: int) -> Iterator[None]:
    """``n`` processes spinning a Python loop for the duration of the block."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5)  # let them reach the scheduler
        yield
    finally:
        for p in loops:
            p.terminate()
        for p in loops:
            p.wait()


def fit_seconds(dataset: str, seeds: list[int], n_busy: int) -> dict[str, list[float]]:
    """Seconds per seed of the eraser's fit, per thread setting."""
    data = load_dataset(dataset)
    setups = []
    for seed in seeds:
        splits = split_dataset(data, seed=seed)
        train, calib = splits.train, splits.calibration
        model = train_deployed("vanilla", train.X, train.y, train.bias, seed=seed)
        setups.append((seed, lambda X, m=model: predict_proba(m, X), calib))
    settings = {"chosen": None, "all threads": torch.get_num_threads()}
    _, fn, calib = setups[0]
    Eraser(fn, random_state=0).fit(calib.X, calib.y, bias=calib.bias)  # warm-up, untimed
    seconds: dict[str, list[float]] = {name: [] for name in settings}
    with busy_loops(n_busy):
        for seed, fn, calib in setups:
            for name, n_threads in settings.items():
                start = time.perf_counter()
                Eraser(fn, random_state=seed, n_threads=n_threads).fit(
                    calib.X, calib.y, bias=calib.bias
                )
                seconds[name].append(time.perf_counter() - start)
    return seconds


def step_ms(module: torch.nn.Module, X: torch.Tensor, batch: int, threads: int) -> float:
    """Best of three half-second runs: milliseconds per training step on ``threads``."""
    optimiser = torch.optim.Adam(module.parameters())
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        best = float("inf")
        for _ in range(3):
            start, steps = time.perf_counter(), 0
            while time.perf_counter() - start < 0.5:
                optimiser.zero_grad()
                module(X[:batch]).sum().backward()
                optimiser.step()
                steps += 1
            best = min(best, (time.perf_counter() - start) / steps)
    finally:
        torch.set_num_threads(before)
    return 1e3 * best


def steps(n_busy: int) -> None:
    cases = [
        ("MLP 64-64, COMPAS-like (40 inputs)", "mlp", (40,), (64, 64)),
        ("MLP 256-256 (100 inputs)", "mlp", (100,), (256, 256)),
        ("MLP 1024-1024 (100 inputs)", "mlp", (100,), (1024, 1024)),
        ("CNN, 3x28x28 images", "cnn", (3, 28, 28), (64, 64)),
    ]
    threads = torch.get_num_threads()
    print(f"ms per training step, best of 3; {threads} threads available; busy loops: {n_busy}")
    print("| patch | batch | MFLOP per step | chosen threads | 1 thread | all threads |")
    print("|---|---|---|---|---|---|")
    with busy_loops(n_busy):
        for name, spec, shape, hidden in cases:
            X = torch.randn(512, *shape)
            module = build_patch(spec, shape, 2, hidden_sizes=hidden, X=X).train()
            batch = default_batch_size(shape)
            flops = step_flops(module, X, batch)
            chosen = choose_threads(module, X, batch)
            one, every = step_ms(module, X, batch, 1), step_ms(module, X, batch, threads)
            print(f"| {name} | {batch} | {flops / 1e6:,.0f} | {chosen} | {one:.2f} | {every:.2f} |")
    print(f"(one thread below {MIN_THREADED_STEP_FLOPS / 1e6:,.0f} MFLOP per step)")


def stat(values: list[float]) -> str:
    """Mean ± standard deviation."""
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--datasets", nargs="+", default=["compas", "lsac"])
    parser.add_argument("--busy", type=int, default=2, help="busy-looping processes (default 2)")
    parser.add_argument("--steps", action="store_true", help="time training steps instead")
    args = parser.parse_args()
    warnings.simplefilter("ignore", UserWarning)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} cores, load average {load}; torch {torch.__version__}")
    if args.steps:
        for n_busy in (0, args.busy):
            steps(n_busy)
        return
    for dataset in args.datasets:
        alone = fit_seconds(dataset, args.seeds, 0)
        busy = fit_seconds(dataset, args.seeds, args.busy)
        print(f"\n{dataset}: seconds per fit, seeds {args.seeds}")
        for name in alone:
            for label, values in (("alone", alone[name]), ("busy", busy[name])):
                runs = " ".join(f"{v:.2f}" for v in values)
                print(f"  {name:12s} {label}: {runs}  ({stat(values)})")
            ratio = np.mean(busy[name]) / np.mean(alone[name])
            print(f"  {name:12s} busy / alone: {ratio:.1f}x")


if __name__ == "__main__":
    main()
