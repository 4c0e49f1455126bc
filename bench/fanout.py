#!/usr/bin/env python3
"""Process fan-out benchmark (results in BENCHMARKS.md).

M worker processes start together (a barrier) and each fetches tokens for R
resources against the emulator's fake IMDS enforcing IMDS's documented limits
(20 requests/s, 5 in flight, 429 past them) with a fixed latency. Three modes,
each against a fresh fake IMDS and (for the gateway modes) a fresh, cold
gateway process:

  imds      azure-identity's ManagedIdentityCredential straight to the fake IMDS
            (AZURE_POD_IDENTITY_AUTHORITY_HOST points it there), one per worker
  gateway   identity_gateway.GatewayCredential over the gateway's Unix socket
  endpoint  the unmodified ManagedIdentityCredential through the gateway's
            App Service-compatible identity endpoint (IDENTITY_ENDPOINT /
            IDENTITY_HEADER)

Reports wall time (barrier release to the last worker done), per-worker time
to get all R tokens (p50/p99), failed workers, requests that reached the fake
IMDS and how many it answered 429.

Run with the project's venv (scripts/tools/python.sh creates it) from the
repository root, after building the release binaries:

  cargo build --release -p identity-gateway -p identity-gateway-bench
  .tools/venv/bin/python bench/fanout.py --workers 10,60,200 --resources 3
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

# Imported before forking, so workers start fast and together.
from azure.identity import ManagedIdentityCredential  # noqa: E402
from identity_gateway import GatewayCredential  # noqa: E402

MODES = ("imds", "gateway", "endpoint")
# Environment variables that would steer azure-identity / MSAL elsewhere.
_IDENTITY_ENV = (
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_CLIENT_ID",
    "IDENTITY_GATEWAY_SOCKET",
)


class FakeImds:
    """bench/src/fake_imds.rs as a child process."""

    def __init__(self, binary: str, latency_ms: int, limits: bool = True) -> None:
        args = [binary, "--latency-ms", str(latency_ms)] + ([] if limits else ["--no-limits"])
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "url":
            raise RuntimeError(f"fake-imds said {line!r}")
        self.url = line[1]

    def stats(self) -> Dict[str, int]:
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


class Gateway:
    """The release gateway, production shape, cold, against `imds_url`."""

    def __init__(self, binary: str, imds_url: str, identity_endpoint: bool) -> None:
        self.dir = tempfile.mkdtemp(prefix="fanout-gw-")
        self.socket = os.path.join(self.dir, "gw.sock")
        env = {k: v for k, v in os.environ.items() if k not in _IDENTITY_ENV}
        env["IDENTITY_GATEWAY_LOG"] = "error"
        args = [binary, "--socket", self.socket, "--source", "imds", "--imds-endpoint", imds_url]
        if identity_endpoint:
            args += ["--identity-endpoint", "127.0.0.1:0"]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, env=env, text=True)
        self.endpoint: Optional[str] = None
        self.header: Optional[str] = None
        if identity_endpoint:
            header_file = None
            while self.endpoint is None or header_file is None:
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError("gateway exited before announcing its identity endpoint")
                if line.startswith("identity endpoint: "):
                    self.endpoint = line.split(": ", 1)[1].strip()
                elif line.startswith("identity header file: "):
                    header_file = line.split(": ", 1)[1].strip()
            with open(header_file) as f:
                self.header = f.read().strip()
        deadline = time.monotonic() + 30
        while not os.path.exists(self.socket):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("gateway did not create its socket")
            time.sleep(0.005)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Target:
    """Where a worker gets its tokens, per mode."""

    mode: str
    imds_url: str
    socket: Optional[str] = None
    endpoint: Optional[str] = None
    header: Optional[str] = None


def credential(target: Target):
    """The credential a worker of `target.mode` uses (environment set first,
    as a deployment would)."""
    for name in _IDENTITY_ENV:
        os.environ.pop(name, None)
    if target.mode == "imds":
        os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = target.imds_url
        return ManagedIdentityCredential()
    if target.mode == "gateway":
        return GatewayCredential(socket_path=target.socket)
    os.environ["IDENTITY_ENDPOINT"] = target.endpoint
    os.environ["IDENTITY_HEADER"] = target.header
    return ManagedIdentityCredential()


def scope(r: int) -> str:
    return f"https://resource-{r}.example.test/.default"


def _worker(target: Target, resources: int, barrier, results) -> None:
    # azure-identity logs each failed attempt at WARNING; failures are counted here.
    logging.disable(logging.CRITICAL)
    try:
        cred = credential(target)
    except Exception as e:  # pragma: no cover - reported as a failure
        barrier.wait()
        results.put((False, 0.0, f"construct: {type(e).__name__}: {e}"))
        return
    barrier.wait()
    t0 = time.perf_counter()
    try:
        for r in range(resources):
            token = cred.get_token(scope(r))
            if not token.token:
                raise RuntimeError("empty token")
        results.put((True, time.perf_counter() - t0, ""))
    except Exception as e:
        results.put((False, time.perf_counter() - t0, f"{type(e).__name__}: {str(e)[:200]}"))


def pct(values: List[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


def run_one(args, mode: str, workers: int) -> Dict[str, object]:
    fake = FakeImds(args.fake_imds, args.latency_ms)
    gateway = None
    try:
        target = Target(mode=mode, imds_url=fake.url)
        if mode != "imds":
            gateway = Gateway(args.gateway, fake.url, identity_endpoint=(mode == "endpoint"))
            target.socket, target.endpoint, target.header = gateway.socket, gateway.endpoint, gateway.header
        ctx = mp.get_context("fork")
        barrier = ctx.Barrier(workers + 1)
        results = ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(target, args.resources, barrier, results)) for _ in range(workers)]
        for p in procs:
            p.start()
        barrier.wait()
        t0 = time.perf_counter()
        outcomes = [results.get(timeout=args.timeout) for _ in procs]
        wall = time.perf_counter() - t0
        for p in procs:
            p.join()
        stats = fake.stats()
    finally:
        if gateway:
            gateway.stop()
        fake.stop()
    ok = [t for good, t, _ in outcomes if good]
    errors = [e for good, _, e in outcomes if not good]
    return {
        "mode": mode,
        "workers": workers,
        "wall_s": wall,
        "p50_ms": pct(ok, 0.50) * 1e3,
        "p99_ms": pct(ok, 0.99) * 1e3,
        "failed": len(errors),
        "upstream": stats["token_requests"],
        "throttled": stats["throttled"],
        "max_concurrent": stats["max_concurrent"],
        "first_error": errors[0] if errors else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="10,60,200", help="comma-separated sweep of M (default 10,60,200)")
    parser.add_argument("--resources", type=int, default=3, help="resources per worker (R, default 3)")
    parser.add_argument("--latency-ms", type=int, default=15, help="fake IMDS latency (default 15)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds per (M, mode); medians reported")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for each worker")
    parser.add_argument("--gateway", default="target/release/identity-gateway")
    parser.add_argument("--fake-imds", default="target/release/fake-imds")
    parser.add_argument("--json", help="also write every round's result to this file")
    args = parser.parse_args()
    modes = args.modes.split(",")
    sweep = [int(m) for m in args.workers.split(",")]

    print("# process fan-out: M workers x R resources against a fake IMDS (20 rps / 5 concurrent)")
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}, R = {args.resources}, "
          f"IMDS latency {args.latency_ms} ms, {args.rounds} round(s), modes interleaved")
    every = []
    print("\n| M | mode | wall s | worker p50 ms | worker p99 ms | failed workers | upstream calls | 429s | max in flight at IMDS |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for workers in sweep:
        rounds: Dict[str, List[Dict[str, object]]] = {m: [] for m in modes}
        for _ in range(args.rounds):
            for mode in modes:
                result = run_one(args, mode, workers)
                rounds[mode].append(result)
                every.append(result)
                if result["first_error"]:
                    print(f"  ({mode}, M={workers}) first error: {result['first_error']}", file=sys.stderr)
        for mode in modes:
            rs = rounds[mode]
            med = lambda key: statistics.median(r[key] for r in rs)  # noqa: E731
            print(f"| {workers} | {mode} | {med('wall_s'):.2f} | {med('p50_ms'):.0f} | {med('p99_ms'):.0f} | "
                  f"{med('failed'):.0f} | {med('upstream'):.0f} | {med('throttled'):.0f} | {med('max_concurrent'):.0f} |",
                  flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(every, f, indent=1)


if __name__ == "__main__":
    main()
