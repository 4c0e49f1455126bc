#!/usr/bin/env python3
"""A/B of gateway builds on the cached token path, with the CPU each side spends.

Starts each given gateway binary (``--emulator``, per-caller rate limit lifted)
on its own socket, then runs interleaved rounds of ``token-bench --drive``:
COUNT empty RPCs (Health/Check) and COUNT cached GetTokens from CALLERS callers
on one HTTP/2 connection, per binary per round, the order turned each round.
For each binary and kind it prints the median calls/s and the median CPU per
call of the client (the driver's rusage) and of the gateway (its
/proc/PID/stat), and each round's GetToken/empty ratio.

    bench/token_ab.py --rounds 8 --count 150000 --callers 256 OLD_BIN NEW_BIN

Build first: ``cargo build --release -p identity-gateway -p identity-gateway-bench``.
Copy the binaries to compare out of target/ (e.g. /tmp/gw-old, /tmp/gw-new).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DRIVER = REPO / "target" / "release" / "token-bench"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def drive(
    driver: Path, socket: str, kind: str, count: int, callers: int, gateway_pid: int
) -> tuple[float, float, float]:
    """One round: calls/s, client µs and gateway µs of CPU per call."""
    server_before = cpu_seconds(gateway_pid)
    started = time.monotonic()
    child = subprocess.Popen([str(driver), "--drive", socket, kind, str(count), str(callers)])
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.monotonic() - started
    if status != 0:
        raise SystemExit(f"token-bench --drive {kind} failed (status {status})")
    server = cpu_seconds(gateway_pid) - server_before
    client = usage.ru_utime + usage.ru_stime
    return count / elapsed, client / count * 1e6, server / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--count", type=int, default=150_000, help="calls per kind per round")
    parser.add_argument("--callers", type=int, default=256)
    parser.add_argument("--driver", type=Path, default=DRIVER, help="the token-bench binary that drives the calls")
    parser.add_argument("gateways", nargs="+", type=Path)
    args = parser.parse_args()
    if not args.driver.exists():
        raise SystemExit(f"{args.driver} is missing: cargo build --release -p identity-gateway-bench")

    with tempfile.TemporaryDirectory(prefix="token-ab.") as work:
        config = Path(work, "limits.toml")
        # One caller (the driver) makes every call: lift the per-caller rate.
        config.write_text("[limits]\nper_caller_rate = 10000000\nper_caller_burst = 10000000\n")
        env = dict(os.environ, IDENTITY_GATEWAY_LOG="error")
        running = []
        try:
            for i, binary in enumerate(args.gateways):
                socket = str(Path(work, f"{i}.sock"))
                cmd = [str(binary), "--emulator", "--socket", socket, "--config", str(config)]
                running.append((subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL), socket))
            for _ in range(300):
                if all(Path(s).exists() for _, s in running):
                    break
                time.sleep(0.05)
            for process, socket in running:  # warm: the token is fetched once
                drive(args.driver, socket, "token", 1000, 1, process.pid)
            rounds: dict[int, dict[str, list]] = {i: {"health": [], "token": []} for i in range(len(running))}
            for r in range(args.rounds):
                order = list(range(len(running)))[:: -1 if r % 2 else 1]
                kinds = ("health", "token") if (r // 2) % 2 == 0 else ("token", "health")
                for i in order:
                    process, socket = running[i]
                    for kind in kinds:
                        rounds[i][kind].append(drive(args.driver, socket, kind, args.count, args.callers, process.pid))
        finally:
            for process, _ in running:
                process.kill()
                process.wait()

    print(f"{args.rounds} rounds, {args.count} calls per kind, {args.callers} callers; medians")
    print("| gateway | empty RPC/s | client/server µs per call | GetToken/s | client/server µs per call | GetToken/empty (median of rounds) | per round |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for i, binary in enumerate(args.gateways):
        health, token = rounds[i]["health"], rounds[i]["token"]
        med = lambda runs, j: statistics.median(run[j] for run in runs)  # noqa: E731
        ratios = [t[0] / h[0] for h, t in zip(health, token)]
        print(
            f"| {binary} | {med(health, 0):.0f} | {med(health, 1):.2f}/{med(health, 2):.2f} "
            f"| {med(token, 0):.0f} | {med(token, 1):.2f}/{med(token, 2):.2f} "
            f"| {statistics.median(ratios):.3f} | {' '.join(f'{x:.2f}' for x in ratios)} |"
        )


if __name__ == "__main__":
    main()
