"""Benchmark: the proxy's reading of one request body of 8 rows (``RequestReader.read``:
simdjson into a float32 array, the nesting and range checks), in microseconds a body, at
each width, with simdjson's parse alone beside it, and the parse alone of the other JSON
parsers for Python that are installed (orjson always; yyjson, cysimdjson and msgspec when
present): whether another parser would read a wide body's numbers faster.

    python benchmarks/request_parse.py --features 13 404 2000
"""

from __future__ import annotations

import argparse
import importlib
import timeit
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import orjson
import simdjson

from ruleeraser.serve.bodies import RequestReader
from ruleeraser.serve.schemas import api_models


def best(call: Callable[[], object]) -> float:
    """Microseconds a call: the fastest of 5 runs of 2,000 calls."""
    return 1e6 * min(timeit.repeat(call, number=2000, repeat=5)) / 2000


#: The other parsers compared when installed: each one's parse of a whole body (its own tree
#: or Python objects), made from its module.
OTHERS: dict[str, Callable[[Any], Callable[[bytes], object]]] = {
    "yyjson": lambda module: module.Document,
    "cysimdjson": lambda module: module.JSONParser().parse,
    "msgspec": lambda module: module.json.Decoder().decode,
}


def other_parsers() -> dict[str, Callable[[bytes], object]]:
    """orjson's parse and that of each parser of :data:`OTHERS` that is installed."""
    parsers: dict[str, Callable[[bytes], object]] = {"orjson": orjson.loads}
    for name, parse_with in OTHERS.items():
        try:
            parsers[name] = parse_with(importlib.import_module(name))
        except ImportError:
            print(f"{name} is not installed: not compared")
    return parsers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=int, nargs="+", default=[13, 404, 2000])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    others = other_parsers()
    print(
        f"{'width':>5} {'body KB':>8} {'read µs':>8} {'simdjson parse µs':>18}"
        + "".join(f" {name + ' µs':>15}" for name in others)
    )
    for width in args.features:
        body = orjson.dumps({"instances": (10 * rng.normal(size=(args.rows, width))).tolist()})
        model = api_models(width, 1000, 1e30).request
        reader, bare = RequestReader((width,), 1000, 1e30, model), simdjson.Parser()

        read, parse = best(partial(reader.read, body)), best(partial(bare.parse, body))
        alone = [best(partial(parse_body, body)) for parse_body in others.values()]
        print(
            f"{width:>5} {len(body) / 1e3:>8.1f} {read:>8.1f} {parse:>18.1f}"
            + "".join(f" {t:>15.1f}" for t in alone)
        )


if __name__ == "__main__":
    main()
