"""Load test of `muse-infer serve` on loopback: N requests from C concurrent clients, errors and latency.

Starts the real command (`muse-infer serve --index EMB.npy --port 0`, a subprocess: model loaded once,
uvicorn, the thread pool) over an index of the demo model's synthetic videos, then C threads, each
with its own keep-alive HTTP connection, send the requests: a mix of searches (distinct queries),
keyframe images and video byte ranges, as a results page makes them. Every answer is checked
(status, and a search's JSON); latency is per request, client side.

Run:  python benchmarks/bench_serve.py --requests 200 --clients 8 [--index EMB.npy] [--json out.json]
(docs/benchmarks.md, "Search service"; tests/test_web_service.py runs the same load and asserts zero errors.)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

QUERIES = [
    "a small red square moves left",
    "three large blue diamonds appear and move right",
    "a green triangle moves up",
    "two small yellow triangles move left and disappear",
    "a purple circle stops",
    "an orange diamond turns cyan",
]
SERVE = [sys.executable, "-c", "from muse_infer.cli import main; main()", "serve"]


@dataclass
class LoadResult:
    """Per-request latencies (seconds) and the requests that went wrong (description strings)."""

    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    by_kind: dict[str, list[float]] = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "requests": len(self.latencies) + len(self.errors),
            "errors": len(self.errors),
            "seconds": round(self.seconds, 3),
            "requests_per_s": round(len(self.latencies) / self.seconds, 1) if self.seconds else 0.0,
            **_percentiles(self.latencies),
            "by_kind": {kind: _percentiles(values) for kind, values in sorted(self.by_kind.items())},
        }


def _percentiles(latencies: list[float]) -> dict:
    """p50/p95/p99 in ms (nearest rank) and the count."""
    ordered = sorted(latencies)
    if not ordered:
        return {"count": 0}
    rank = {q: ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)] for q in (50, 95, 99)}
    return {"count": len(ordered), **{f"p{q}_ms": round(1000 * v, 2) for q, v in rank.items()}}


def start_server(
    index: str | os.PathLike, *options: str, timeout: float = 120.0
) -> tuple[subprocess.Popen, str]:
    """`muse-infer serve --index INDEX --port 0 OPTIONS` in a subprocess; returns it and its URL once it listens.

    Waits for the "serving ... at URL" line on its stderr (the model is loaded by then), then keeps
    reading stderr in a thread (collected in ``process.log``) so the pipe never fills.
    """
    process = subprocess.Popen(
        [*SERVE, "--index", str(index), "--port", "0", *options],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    process.log = []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stderr, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(deadline - time.monotonic()):
                break
            line = process.stderr.readline()
            if not line:
                break
            process.log.append(line)
            if line.startswith("serving ") and " at http://" in line:
                url = line.split(" at ", 1)[1].split(" ", 1)[0].rstrip(";").rstrip("/")
                threading.Thread(target=_drain, args=(process,), daemon=True).start()
                return process, url
    process.kill()
    process.wait()
    raise RuntimeError("the server did not start:\n" + "".join(process.log) + (process.stderr.read() or ""))


def _drain(process: subprocess.Popen) -> None:
    for line in process.stderr:
        process.log.append(line)


def stop_server(process: subprocess.Popen, timeout: float = 30.0) -> int:
    """Ctrl-C (SIGINT) and wait; returns the exit status."""
    process.send_signal(signal.SIGINT)
    return process.wait(timeout)


def load_test(base_url: str, requests: int = 200, clients: int = 8, token: str | None = None) -> LoadResult:
    """``requests`` requests from ``clients`` threads (one keep-alive connection each); see the module docstring."""
    import httpx

    headers = {"authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
        rows = client.get("/api/info").raise_for_status().json()["rows"]
        client.get(
            "/api/search", params={"q": "warm up"}
        ).raise_for_status()  # the model's first call, untimed
    plan = [_request_for(number, rows) for number in range(requests)]
    result, lock = LoadResult(), threading.Lock()

    def worker(share: list) -> None:
        with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
            for kind, path, extra, check in share:
                began = time.perf_counter()
                try:
                    response = client.get(path, headers=extra)
                    problem = check(response)
                except httpx.HTTPError as error:
                    problem = f"{type(error).__name__}: {error}"
                took = time.perf_counter() - began
                with lock:
                    if problem:
                        result.errors.append(f"{path}: {problem}")
                    else:
                        result.latencies.append(took)
                        result.by_kind.setdefault(kind, []).append(took)

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, [plan[i::clients] for i in range(clients)]))
    result.seconds = time.perf_counter() - began
    return result


def _request_for(number: int, rows: int) -> tuple[str, str, dict, object]:
    """The number-th request of the mix: half searches, a quarter keyframes, a quarter video ranges."""
    row = number % max(rows, 1)
    if number % 4 in (0, 2):
        query = QUERIES[number % len(QUERIES)] + f" {number}"
        return "search", f"/api/search?q={query.replace(' ', '+')}&k=10", {}, _check_search
    if number % 4 == 1:
        return "thumbnail", f"/thumbs/{row}/{number % 3}", {}, _check_image
    return "media range", f"/media/{row}", {"range": "bytes=0-65535"}, _check_range


def _check_search(response) -> str | None:
    if response.status_code != 200:
        return f"status {response.status_code}"
    body = response.json()
    return None if body["results"] and all("media" in r for r in body["results"]) else "no results"


def _check_image(response) -> str | None:
    ok = response.status_code == 200 and response.content[:2] == b"\xff\xd8"
    return None if ok else f"status {response.status_code}, {len(response.content)} bytes"


def _check_range(response) -> str | None:
    ok = response.status_code == 206 and response.headers.get("content-range", "").startswith("bytes 0-")
    return None if ok else f"status {response.status_code}"


def demo_index(folder: Path) -> Path:
    """An index of the demo model's 7 synthetic videos in ``folder`` (thumbnails made)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from web_corpus import build_demo_corpus

    return build_demo_corpus(folder).index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--index", help="an existing index (default: build the demo corpus in a temp folder)")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as folder:
        index = args.index or demo_index(Path(folder))
        process, url = start_server(index)
        try:
            result = load_test(url, args.requests, args.clients)
        finally:
            status = stop_server(process)
    numbers = {**result.summary(), "clients": args.clients, "server_exit_status": status}
    print(json.dumps(numbers, indent=1))
    for error in result.errors[:10]:
        print("error:", error, file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(numbers, indent=1) + "\n")


if __name__ == "__main__":
    main()
