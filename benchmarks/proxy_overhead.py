"""Proxy overhead on loopback: the fair proxy against calling its upstream directly.

    python benchmarks/proxy_overhead.py [--requests N] [--rounds R] [--concurrency 16]
                                        [--rows-per-request K] [--features N [N ...]]
                                        [--upstream-server example|threaded] [--seed S]
                                        [--client aiohttp|httpx]
                                        [--upstream-latency-ms MS] [--no-coalesce]
                                        [--max-inflight N] [--min-inflight N]
                                        [--max-batch-rows N]

Three processes: this one (the load client: aiohttp, one connection per concurrent worker;
``--client httpx`` for one httpx client per worker, 3-4x the client's CPU), the upstream and
the fair proxy (``ruleeraser.serve.create_app`` behind uvicorn, aiohttp to the upstream). The
upstream serves the demo model of ``examples/example_upstream.py`` (a scikit-learn logistic
regression that learned a bias; ``--features N``: rows of N columns, COMPAS-shaped above 4,
most of them the one-hot levels of a categorical column, all standardised) either behind
uvicorn with the proxy's settings (``--upstream-server example``, the default: FastAPI and
pydantic) or behind the standard library's ``http.server.ThreadingHTTPServer`` (``threaded``:
``json.loads``, ``predict_proba``, ``json.dumps``). Both servers run one process each, on
127.0.0.1 ephemeral ports (sockets of protocol IPPROTO_TCP, so that connections get
TCP_NODELAY). Separate processes, not threads: each gets its own interpreter lock, as in
deployment, and the OS shares the cores among them. On a 2-core machine the three compete for
CPU, so the CPU time each spends per request is printed too, and the cores each kept busy: a
process near 1.00 is the bottleneck, whether a server or the client. Each round also gives the
share of the machine's CPU time the hypervisor took meanwhile (``stolen``, from /proc/stat): on
a shared virtual machine the CPU per request rises with it, so compare runs at like shares.

The proxy coalesces concurrent requests into shared upstream calls unless ``--no-coalesce``;
the upstream calls it made per client request (from its ``/healthz`` counts) are printed for
every proxy round (1.00 without coalescing), with the in-flight limit it had learnt by the
round's end.

Each round sends the same N requests (the same bodies) at the same concurrency straight to
the upstream and through the proxy, alternating which goes first; latencies are pooled over
rounds, requests per second are given per round (median and range). With several
``--features`` widths, each width gets its own upstream, proxy and eraser, all started first,
and every round runs each width in turn: the widths' figures are paired in time, since a
shared machine's speed drifts over minutes (the ratio of the proxy's CPU per request at two
widths is given over the rounds too). A last table gives per width the p50/p99 and requests
per second direct and through the proxy and the proxy's CPU per request (and its ratio to
the first width's). The bars: the proxy adds at most 2 ms at p50 and keeps at least 80% of
the direct requests per second; at 2000 features at least 70%; its CPU per request at 404
features is at most 1.5x that at 13.
"""

import argparse
import asyncio
import contextlib
import importlib.util
import os
import platform
import select
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
BAR_P50_MS, BAR_RPS_RATIO = 2.0, 0.80
BAR_WIDE_RPS_RATIO, WIDE, BAR_CPU_GROWTH, CPU_WIDTHS = 0.70, 2000, 1.5, (13, 404)
JSON = {"content-type": "application/json"}


def delayed(app: Any, seconds: float) -> Any:
    """``app`` answering every HTTP request ``seconds`` late, without using CPU meanwhile."""

    async def wrapper(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await asyncio.sleep(seconds)
        await app(scope, receive, send)

    return wrapper


def threaded_upstream(model: Any, sock: socket.socket, latency: float) -> None:
    """Serve ``model`` over the instances protocol with the standard library's threaded HTTP
    server (a thread per connection), on a listening socket, until killed."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the load client and the proxy expect
        # TCP_NODELAY on each connection: the answer goes out in two writes (headers, body),
        # and with Nagle's algorithm the second waits for the client's delayed ACK (40 ms).
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            rows = np.asarray(json.loads(body)["instances"], dtype=np.float64)
            if latency:
                time.sleep(latency)
            answer = json.dumps({"predictions": model.predict_proba(rows).tolist()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

    server = Server(sock.getsockname(), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock  # bound already, with IPPROTO_TCP
    sock.listen(128)
    server.serve_forever()


def serve(role: str, args: argparse.Namespace) -> None:
    """Child process: serve the upstream or the proxy on an ephemeral port, printed first."""
    import uvicorn

    from ruleeraser.serve import uvicorn_options

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY
    sock.bind(("127.0.0.1", 0))
    if role == "upstream":
        from example_upstream import create_upstream_app, make_demo

        model = make_demo(args.seed, n_features=args.features[0]).model
        if args.upstream_server == "threaded":
            print(sock.getsockname()[1], flush=True)
            threaded_upstream(model, sock, args.upstream_latency_ms / 1e3)
            return
        app = create_upstream_app(model)
        if args.upstream_latency_ms:
            app = delayed(app, args.upstream_latency_ms / 1e3)
    else:
        from ruleeraser.serve import create_app

        app = create_app(
            args.eraser,
            args.upstream,
            coalesce=not args.no_coalesce,
            max_inflight=args.max_inflight,
            min_inflight=args.min_inflight,
            max_batch_rows=args.max_batch_rows,
        )
    print(sock.getsockname()[1], flush=True)
    # Both servers with the proxy's settings (no access log), so that the upstream is not
    # slower than the proxy for its uvicorn settings alone.
    config = uvicorn.Config(app, log_level="warning", **uvicorn_options(access_log=False))
    uvicorn.Server(config).run(sockets=[sock])


def start(role: str, *extra: str, wait: float = 60.0) -> tuple[subprocess.Popen, int]:
    """Start a server child; return it and its port."""
    cmd = [sys.executable, __file__, "--serve", role, *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], wait)
    line = proc.stdout.readline() if ready else ""
    if not line.strip().isdigit():
        proc.kill()
        raise RuntimeError(f"the {role} server did not start within {wait:g} s")
    return proc, int(line)


def server_stack() -> str:
    """The HTTP parser and event loop uvicorn picks here ("auto")."""
    parser = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"{parser}/{loop}"


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process (this one for None), from /proc."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """The machine's CPU ticks so far, all and those stolen by the hypervisor (from
    /proc/stat; zeros where it is missing)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return sum(fields[:8]), fields[7] if len(fields) > 7 else 0


def stolen_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of the machine's CPU time the hypervisor took between two ticks."""
    return (after[1] - before[1]) / max(after[0] - before[0], 1)


async def wait_healthy(client: httpx.AsyncClient, url: str, wait: float = 30.0) -> None:
    deadline = time.monotonic() + wait
    while True:
        try:
            if (await client.get(url)).status_code < 500:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} is not answering after {wait:g} s")
        await asyncio.sleep(0.1)


Post = Callable[[int, str, bytes], Awaitable[int]]


async def load_client(kind: str, concurrency: int, stack: contextlib.AsyncExitStack) -> Post:
    """``post(worker, url, body) -> status`` for ``concurrency`` workers, with ``kind``'s client.

    aiohttp (default): one session with a connection per worker; it costs the client a third
    to a quarter of httpx's CPU per request, so that the load generator, on the same cores, takes
    less of what the servers would use. httpx: one client per worker, since httpcore's shared
    pool costs each request O(connections^2) work and retries (encode/httpcore#1035).
    """
    if kind == "httpx":
        single = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(limits=single, timeout=30))
            for _ in range(concurrency)
        ]

        async def post_httpx(worker: int, url: str, body: bytes) -> int:
            return (await clients[worker].post(url, content=body, headers=JSON)).status_code

        return post_httpx
    import aiohttp

    session = await stack.enter_async_context(
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency),
            timeout=aiohttp.ClientTimeout(total=30),
            skip_auto_headers=("User-Agent",),
        )
    )

    async def post_aiohttp(worker: int, url: str, body: bytes) -> int:
        async with session.post(url, data=body, headers=JSON) as answer:
            await answer.read()
            return answer.status

    return post_aiohttp


async def load(
    post: Post, concurrency: int, url: str, bodies: list[bytes], n: int, seconds: float
) -> tuple[np.ndarray, float, int]:
    """Send ``n`` POSTs (at most ``seconds``) from ``concurrency`` workers.

    Returns the latencies (s), the elapsed time (s) and the number of non-200 answers.
    """
    latencies: list[float] = []
    errors = sent = 0
    deadline = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        nonlocal sent, errors
        while sent < n and time.perf_counter() < deadline:
            body = bodies[sent % len(bodies)]
            sent += 1
            t0 = time.perf_counter()
            status = await post(index, url, body)
            latencies.append(time.perf_counter() - t0)
            errors += status != 200

    start_time = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return np.array(latencies), time.perf_counter() - start_time, errors


async def upstream_counts(client: httpx.AsyncClient, url: str) -> tuple[int, int, Any]:
    """The proxy's upstream calls, prediction requests so far and in-flight limit (``/healthz``)."""
    health = (await client.get(url)).raise_for_status().json()
    return health["upstream_calls"], health["requests"], health.get("inflight_limit")


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


@dataclass
class Width:
    """One width's demo, eraser, servers and load clients, and its rounds' figures."""

    width: int
    demo: Any
    eraser: Any
    pids: dict[str, int | None]
    urls: dict[str, str]
    bodies: list[bytes] = field(default_factory=list)
    posts: dict[str, Post] = field(default_factory=dict)
    control: Any = None
    diff: float = float("nan")
    results: dict[str, list[tuple[np.ndarray, float, int, dict[str, float]]]] = field(
        default_factory=lambda: {"direct": [], "proxy": []}
    )
    calls_per_request: list[float] = field(default_factory=list)
    limits: list[Any] = field(default_factory=list)
    stolen: dict[str, list[float]] = field(default_factory=lambda: {"direct": [], "proxy": []})


async def prepare(args: argparse.Namespace, w: Width, stack: contextlib.AsyncExitStack) -> None:
    """Open ``w``'s clients, check the proxy's answers against the eraser and warm up."""
    rng = np.random.default_rng(args.seed)
    rows = w.demo.X_test[rng.permutation(len(w.demo.X_test))]
    k = args.rows_per_request
    w.bodies = [
        httpx.Request("POST", "/", json={"instances": rows[i : i + k].tolist()}).read()
        for i in range(0, len(rows) - k + 1, k)
    ]
    w.control = await stack.enter_async_context(httpx.AsyncClient(timeout=30))
    w.posts = {
        target: await load_client(args.client, args.concurrency, stack)
        for target in ("direct", "proxy")
    }
    await wait_healthy(w.control, w.urls["health"])
    check, fair = rows[:200], []
    for i in range(0, len(check), 10):  # bodies within the proxy's limit at any width
        answer = await w.control.post(
            w.urls["proxy"], json={"instances": check[i : i + 10].tolist()}
        )
        fair.append(answer.raise_for_status().json()["predictions"])
    w.diff = float(np.abs(np.concatenate(fair) - w.eraser.predict_proba(check)).max())
    print(f"{w.width} features: fair probabilities through the proxy vs Eraser.predict_proba "
          f"on 200 rows: max |difference| = {w.diff:.1e}")  # fmt: skip
    for target, post in w.posts.items():
        await load(
            post, args.concurrency, w.urls[target], w.bodies, args.warmup, args.phase_seconds
        )


async def run_round(args: argparse.Namespace, w: Width, r: int) -> None:
    """Round ``r`` of ``w``: the same requests straight to the upstream and through the proxy,
    alternating which goes first; one line each."""
    for target in ["direct", "proxy"][:: 1 if r % 2 == 0 else -1]:
        counts0 = await upstream_counts(w.control, w.urls["counts"])
        cpu0 = {name: cpu_seconds(pid) for name, pid in w.pids.items()}
        ticks0 = machine_ticks()
        lat, elapsed, errors = await load(
            w.posts[target], args.concurrency, w.urls[target], w.bodies, args.requests,
            args.phase_seconds,
        )  # fmt: skip
        cpu = {
            name: (cpu_seconds(pid) - cpu0[name]) / max(len(lat), 1) * 1e6
            for name, pid in w.pids.items()
        }
        w.stolen[target].append(stolen_share(ticks0, machine_ticks()))
        calls = limit = ""
        if target == "proxy":
            counts = await upstream_counts(w.control, w.urls["counts"])
            w.calls_per_request.append((counts[0] - counts0[0]) / max(counts[1] - counts0[1], 1))
            calls = f"{w.calls_per_request[-1]:.2f}"
            w.limits.append(counts[2])
            limit = "-" if counts[2] is None else str(counts[2])
        w.results[target].append((lat, elapsed, errors, cpu))
        print(
            f"{r + 1:>5} {w.width:>5} {target:>6} {ms(np.percentile(lat, 50)):>7} "
            f"{ms(np.percentile(lat, 99)):>7} {len(lat) / elapsed:>7.0f} {errors:>6} "
            f"{calls:>9} {limit:>5} {w.stolen[target][-1]:>6.0%}   {cpu['client']:>6.0f} "
            f"{cpu['upstream']:>8.0f} {cpu['proxy']:>5.0f}"
        )


def summarise(w: Width) -> dict[str, Any]:
    """Print ``w``'s figures over its rounds; per target ``(p50 s, p99 s, median req/s)``, the
    proxy's CPU µs per request (median of the rounds), the req/s ratio and the answers' diff."""
    summary, cpu_total = {}, {}
    print(f"\n=== {w.width} features ===")
    for target, runs in w.results.items():
        pooled = np.concatenate([lat for lat, *_ in runs])
        rps = np.array([len(lat) / elapsed for lat, elapsed, *_ in runs])
        p50s = np.array([np.percentile(lat, 50) for lat, *_ in runs])
        summary[target] = (np.percentile(pooled, 50), np.percentile(pooled, 99), rps)
        cpu = {name: np.median([c[name] for *_, c in runs]) for name in w.pids}
        cpu_total[target] = sum(cpu.values())
        busy = {  # cores each process kept busy: 1.00 is all that one process can use
            name: np.median([c[name] * len(lat) / elapsed / 1e6 for lat, elapsed, _, c in runs])
            for name in w.pids
        }
        calls = (
            f"{np.median(w.calls_per_request):.2f} upstream calls/request [rounds "
            f"{min(w.calls_per_request):.2f}-{max(w.calls_per_request):.2f}], in-flight limit "
            f"at the rounds' ends {'/'.join(map(str, w.limits))}; "
            if target == "proxy"
            else ""
        )
        print(
            f"{target:>6}: p50 {ms(summary[target][0])} ms [rounds {ms(p50s.min())}-"
            f"{ms(p50s.max())}], p99 {ms(summary[target][1])} ms, "
            f"{np.median(rps):.0f} req/s [rounds {rps.min():.0f}-{rps.max():.0f}], "
            f"{sum(e for *_, e, _ in runs)} errors; {calls}CPU µs/request "
            + ", ".join(f"{name} {value:.0f}" for name, value in cpu.items())
            + "; busy cores "
            + ", ".join(f"{name} {value:.2f}" for name, value in busy.items())
            + f"; stolen by the hypervisor {np.median(w.stolen[target]):.0%} of the machine's "
            f"CPU time"
        )
    d50, p50 = summary["direct"][0], summary["proxy"][0]
    ratios = summary["proxy"][2] / summary["direct"][2]
    ratio = np.median(summary["proxy"][2]) / np.median(summary["direct"][2])
    verdict = {True: "PASS", False: "FAIL"}
    cores = os.cpu_count() or 1
    print(
        f"CPU of all three processes per request: direct {cpu_total['direct']:.0f} µs, proxy "
        f"{cpu_total['proxy']:.0f} µs; so on {cores} otherwise idle cores at most "
        f"{cores / cpu_total['direct'] * 1e6:.0f} vs {cores / cpu_total['proxy'] * 1e6:.0f} "
        f"req/s (ratio {cpu_total['direct'] / cpu_total['proxy']:.2f})"
    )
    print(
        f"overhead: p50 {(p50 - d50) * 1e3:+.2f} ms (bar <= {BAR_P50_MS:g} ms: "
        f"{verdict[(p50 - d50) * 1e3 <= BAR_P50_MS]}); req/s ratio {ratio:.2f} [paired rounds "
        f"{ratios.min():.2f}-{ratios.max():.2f}] (bar >= {BAR_RPS_RATIO:.2f}: "
        f"{verdict[ratio >= BAR_RPS_RATIO]})"
    )
    proxy_cpus = [c["proxy"] for *_, c in w.results["proxy"]]
    return {
        **{
            target: (p50_, p99_, float(np.median(rps)))
            for target, (p50_, p99_, rps) in summary.items()
        },
        "proxy_cpu": float(np.median(proxy_cpus)),
        "proxy_cpus": proxy_cpus,
        "stolen": float(np.median(w.stolen["proxy"])),
        "ratio": ratio,
        "diff": w.diff,
    }


async def bench(args: argparse.Namespace, widths: list[Width]) -> dict[int, dict[str, Any]]:
    """Prepare every width, then run the rounds, each round every width in turn (so that the
    widths' figures are paired in time); the summary of each width."""
    async with contextlib.AsyncExitStack() as stack:
        for w in widths:
            await prepare(args, w, stack)
        print(f"\n{'round':>5} {'width':>5} {'target':>6} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'req/s':>7} {'errors':>6} {'calls/req':>9} {'limit':>5} {'stolen':>6}   "
              "CPU µs/request: client upstream proxy")  # fmt: skip
        for r in range(args.rounds):
            for w in widths:
                await run_round(args, w, r)
    return {w.width: summarise(w) for w in widths}


def parse_args() -> argparse.Namespace:
    from ruleeraser.serve import DEFAULT_MIN_INFLIGHT

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per target per round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds, alternating the order")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rows-per-request", type=int, default=1)
    parser.add_argument(
        "--features", type=int, nargs="+", default=[4], metavar="N",
        help="row widths to measure, each in turn every round (default 4: the narrow demo); "
        "above 4 a COMPAS-shaped demo, e.g. --features 13 404 2000",
    )  # fmt: skip
    parser.add_argument(
        "--upstream-server", choices=["example", "threaded"], default="example",
        help="the model behind uvicorn and FastAPI (example) or the standard library's "
        "ThreadingHTTPServer (threaded)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--client", choices=["aiohttp", "httpx"], default="aiohttp",
        help="the load client's HTTP library (aiohttp spends less CPU per request)",
    )  # fmt: skip
    parser.add_argument("--warmup", type=int, default=500, help="requests per target first")
    parser.add_argument("--phase-seconds", type=float, default=60.0, help="cap per load phase")
    parser.add_argument(
        "--upstream-latency-ms", type=float, default=0.0,
        help="emulate a model whose compute runs elsewhere (a GPU, another host): the upstream "
        "waits this long per request without using CPU (default 0)",
    )  # fmt: skip
    parser.add_argument(
        "--no-coalesce", action="store_true",
        help="the proxy makes one upstream call per request (default: it coalesces)",
    )  # fmt: skip
    parser.add_argument(
        "--max-inflight", type=int, default=None,
        help="the proxy's upstream calls out at once when coalescing (its default)",
    )  # fmt: skip
    parser.add_argument(
        "--min-inflight", type=int, default=DEFAULT_MIN_INFLIGHT,
        help="the fewest the proxy's learnt in-flight limit goes down to "
        f"({DEFAULT_MIN_INFLIGHT}, its default)",
    )  # fmt: skip
    parser.add_argument(
        "--max-batch-rows", type=int, default=None,
        help="the proxy's most rows per coalesced call (its default)",
    )  # fmt: skip
    parser.add_argument("--serve", choices=["upstream", "proxy"], help=argparse.SUPPRESS)
    parser.add_argument("--eraser", help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.requests, args.rounds, args.concurrency, args.rows_per_request) < 1:
        parser.error("--requests, --rounds, --concurrency and --rows-per-request must be >= 1")
    if min(args.features) < 4:
        parser.error("--features must be at least 4 (the narrow demo's columns)")
    return args


def start_width(
    args: argparse.Namespace, width: int, tmp: str, procs: list[subprocess.Popen]
) -> Width:
    """Fit an eraser for the demo of ``width`` columns, save it under ``tmp`` and start its
    upstream and proxy (appended to ``procs``)."""
    from example_upstream import make_demo

    from ruleeraser.eraser import Eraser

    demo = make_demo(args.seed, n_features=width)
    eraser = Eraser(demo.model, random_state=args.seed)
    eraser.fit(demo.X_calib, demo.y_calib, bias=demo.bias_calib)
    body = len(
        httpx.Request(
            "POST", "/", json={"instances": demo.X_test[: args.rows_per_request].tolist()}
        ).read()
    )
    print(f"{width} features: {body / 1e3:.1f} KB per request body")
    eraser.save(tmp)
    up, up_port = start(
        "upstream", "--seed", str(args.seed), "--features", str(width),
        "--upstream-server", args.upstream_server,
        "--upstream-latency-ms", str(args.upstream_latency_ms),
    )  # fmt: skip
    procs.append(up)
    upstream = f"http://127.0.0.1:{up_port}/predict"
    proxy_options = ["--no-coalesce"] if args.no_coalesce else []
    for name in ("max_inflight", "min_inflight", "max_batch_rows"):
        if getattr(args, name) is not None:
            proxy_options += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    px, px_port = start("proxy", "--eraser", tmp, "--upstream", upstream, *proxy_options)
    procs.append(px)
    urls = {
        "direct": upstream,
        "proxy": f"http://127.0.0.1:{px_port}/v1/predict",
        "health": f"http://127.0.0.1:{px_port}/healthz?upstream=true",
        "counts": f"http://127.0.0.1:{px_port}/healthz",
    }
    return Width(width, demo, eraser, {"client": None, "upstream": up.pid, "proxy": px.pid}, urls)


def measure(args: argparse.Namespace) -> dict[int, dict[str, Any]]:
    """Start every width's upstream and proxy, run the rounds and stop them; the summaries."""
    procs: list[subprocess.Popen] = []
    with contextlib.ExitStack() as stack:
        try:
            widths = [
                start_width(args, width, stack.enter_context(tempfile.TemporaryDirectory()), procs)
                for width in dict.fromkeys(args.features)
            ]
            return asyncio.run(bench(args, widths))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()


def print_widths(summaries: dict[int, dict[str, Any]]) -> None:
    """The table per width, and the bars that apply to the widths measured."""
    verdict = {True: "PASS", False: "FAIL"}
    first = next(iter(summaries))
    print(
        f"\n{'width':>5} {'direct p50/p99 ms':>17} {'proxy p50/p99 ms':>16} {'direct req/s':>12} "
        f"{'proxy req/s':>11} {'ratio':>5} {'proxy CPU µs/req':>16} {f'vs {first}':>7} "
        f"{'max |fair - predict_proba|':>26} {'stolen':>6}"
    )  # fmt: skip
    for width, s in summaries.items():
        (d50, d99, drps), (p50, p99, prps) = s["direct"], s["proxy"]
        print(
            f"{width:>5} {ms(d50):>8}/{ms(d99):<8} {ms(p50):>7}/{ms(p99):<8} {drps:>12.0f} "
            f"{prps:>11.0f} {s['ratio']:>5.2f} {s['proxy_cpu']:>16.0f} "
            f"{s['proxy_cpu'] / summaries[first]['proxy_cpu']:>7.2f} {s['diff']:>26.1e} "
            f"{s['stolen']:>6.0%}"
        )
    if WIDE in summaries:
        ratio = summaries[WIDE]["ratio"]
        print(
            f"at {WIDE} features: req/s ratio {ratio:.2f} (bar >= {BAR_WIDE_RPS_RATIO:.2f}: "
            f"{verdict[ratio >= BAR_WIDE_RPS_RATIO]})"
        )
    narrow, wide = CPU_WIDTHS
    if narrow in summaries and wide in summaries:
        growth = summaries[wide]["proxy_cpu"] / summaries[narrow]["proxy_cpu"]
        rounds = np.divide(summaries[wide]["proxy_cpus"], summaries[narrow]["proxy_cpus"])
        print(
            f"proxy CPU per request at {wide} features / at {narrow}: {growth:.2f} [same "
            f"rounds {rounds.min():.2f}-{rounds.max():.2f}] (bar <= {BAR_CPU_GROWTH:g}: "
            f"{verdict[growth <= BAR_CPU_GROWTH]})"
        )


def main() -> int:
    args = parse_args()
    if args.serve:
        serve(args.serve, args)
        return 0
    mode = "without coalescing" if args.no_coalesce else "coalescing"
    if not args.no_coalesce and (args.max_inflight or args.min_inflight or args.max_batch_rows):
        mode += (
            f" (max inflight {args.max_inflight}, min inflight {args.min_inflight}, "
            f"max batch rows {args.max_batch_rows})"
        )
    print(
        f"seed {args.seed}; {args.rounds} rounds x {args.requests} requests per target, "
        f"concurrency {args.concurrency}, {args.rows_per_request} row(s) per request, "
        f"widths {args.features}, {args.upstream_server} upstream, upstream latency "
        f"{args.upstream_latency_ms:g} ms, proxy {mode}, {args.warmup} warm-up requests\n"
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, uvicorn on "
        f"{server_stack()}, load average before start {os.getloadavg()[0]:.2f}; three "
        f"processes: client ({args.client}), upstream, proxy (1 worker each)"
    )
    print_widths(measure(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
