"""Benchmark: the proxy's reading of one request body of 8 rows (``RequestReader.read``:
simdjson into a float32 array, the nesting and range checks), in microseconds a body, at
each width, with simdjson's parse alone beside it.

    python benchmarks/request_parse.py --features 13 404 2000
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from functools import partial

import numpy as np
import orjson
import simdjson

from ruleeraser.serve.bodies import RequestReader
from ruleeraser.serve.schemas import api_models


def best(call: Callable[[], object]) -> float:
    """Microseconds a call: the fastest of 5 runs of 2,000 calls."""
    return 1e6 * min(timeit.repeat(call, number=2000, repeat=5)) / 2000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=int, nargs="+", default=[13, 404, 2000])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"{'width':>5} {'body KB':>8} {'read µs':>8} {'simdjson parse µs':>18}")
    for width in args.features:
        body = orjson.dumps({"instances": (10 * rng.normal(size=(args.rows, width))).tolist()})
        model = api_models(width, 1000, 1e30).request
        reader, bare = RequestReader((width,), 1000, 1e30, model), simdjson.Parser()

        read, parse = best(partial(reader.read, body)), best(partial(bare.parse, body))
        print(f"{width:>5} {len(body) / 1e3:>8.1f} {read:>8.1f} {parse:>18.1f}")


if __name__ == "__main__":
    main()
