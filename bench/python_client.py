#!/usr/bin/env python3
"""What a token costs a Python caller (results in BENCHMARKS.md).

Against one fake IMDS (bench/src/fake_imds.rs, no rate limits, 15 ms latency)
and one gateway (production shape, --identity-endpoint) whose cache is warm:

  first call   a fresh process constructs the credential and calls get_token
               once (connect included; imports excluded); K processes, one
               after another
  cached call  N more get_token calls in one process, one after another

for identity_gateway.GatewayCredential (its first call for a resource is an
RPC to the gateway, later ones come from its in-process cache), the package's
plain client (identity_gateway.connect(...).get_token: every call an RPC,
answered from the gateway's cache), azure-identity's ManagedIdentityCredential
through the gateway's identity endpoint (HTTP; azure-identity then caches in
process) and straight to the fake IMDS (its first call pays IMDS's latency,
later ones come from MSAL's in-process cache).

  cargo build --release -p identity-gateway -p identity-gateway-bench
  .tools/venv/bin/python bench/python_client.py --calls 2000 --processes 20
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

from fanout import FakeImds, Gateway, Target, credential, pct, scope

MODES = ("gateway", "rpc", "endpoint", "imds")


class _Rpc:
    """identity_gateway's client, no cache of its own: what one call to the
    gateway costs."""

    def __init__(self, socket: str) -> None:
        import identity_gateway

        self._client = identity_gateway.connect(socket)

    def get_token(self, scope_: str):
        return self._client.get_token(scope_.removesuffix("/.default"))


def _credential(target: Target):
    if target.mode == "rpc":
        return _Rpc(target.socket)
    return credential(target)


def _first_call(target: Target, out) -> None:
    t0 = time.perf_counter()
    cred = _credential(target)
    cred.get_token(scope(0))
    out.put(time.perf_counter() - t0)


def _cached_calls(target: Target, calls: int, out) -> None:
    cred = _credential(target)
    cred.get_token(scope(0))
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        cred.get_token(scope(0))
        times.append(time.perf_counter() - t0)
    out.put(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="cached calls per mode (default 2000)")
    parser.add_argument("--processes", type=int, default=20, help="fresh processes for the first call (default 20)")
    parser.add_argument("--latency-ms", type=int, default=15)
    parser.add_argument("--gateway", default="target/release/identity-gateway")
    parser.add_argument("--fake-imds", default="target/release/fake-imds")
    args = parser.parse_args()

    fake = FakeImds(args.fake_imds, args.latency_ms, limits=False)
    gateway = Gateway(args.gateway, fake.url, identity_endpoint=True)
    ctx = mp.get_context("fork")
    try:
        targets = {
            "gateway": Target("gateway", fake.url, socket=gateway.socket),
            "rpc": Target("rpc", fake.url, socket=gateway.socket),
            "endpoint": Target("endpoint", fake.url, endpoint=gateway.endpoint, header=gateway.header),
            "imds": Target("imds", fake.url),
        }
        # Warm the gateway's cache, so its first calls measure the client.
        warm = ctx.Queue()
        p = ctx.Process(target=_first_call, args=(targets["gateway"], warm))
        p.start()
        warm.get(timeout=60)
        p.join()

        print("# Python client: cost of a token call")
        print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}, fake IMDS latency {args.latency_ms} ms, "
              f"gateway cache warm; {args.processes} fresh processes, {args.calls} cached calls per mode")
        print("\n| credential | first call median ms (p90) | cached call p50 µs | cached call p99 µs |")
        print("|---|---:|---:|---:|")
        names = {
            "gateway": "`GatewayCredential` (socket; first call an RPC, then its in-process cache)",
            "rpc": "`identity_gateway.connect(...).get_token` (socket; every call an RPC)",
            "endpoint": "azure-identity `ManagedIdentityCredential` via the gateway's identity endpoint",
            "imds": "azure-identity `ManagedIdentityCredential` straight to IMDS (fake, 15 ms)",
        }
        for mode in MODES:
            target = targets[mode]
            firsts = []
            for _ in range(args.processes):
                q = ctx.Queue()
                p = ctx.Process(target=_first_call, args=(target, q))
                p.start()
                firsts.append(q.get(timeout=60))
                p.join()
            q = ctx.Queue()
            p = ctx.Process(target=_cached_calls, args=(target, args.calls, q))
            p.start()
            cached = q.get(timeout=600)
            p.join()
            print(f"| {names[mode]} | {statistics.median(firsts) * 1e3:.2f} ({pct(firsts, 0.9) * 1e3:.2f}) | "
                  f"{pct(cached, 0.5) * 1e6:.0f} | {pct(cached, 0.99) * 1e6:.0f} |", flush=True)
    finally:
        gateway.stop()
        fake.stop()


if __name__ == "__main__":
    main()
