"""Runs the real ``identity-gateway`` binary with ``--emulator`` for the tests:
start on a temp-dir socket, wait for the gRPC health check (bounded, no
sleeps), read what the banner says, stop with SIGTERM.

Where the emulator's banner names things (fakes, the test CA) is read in one
place, :meth:`Emulator.fake_url`, so a banner wording change is a one-line fix.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[3]
#: `label: value` lines of the banner, e.g. "  fake IMDS:    http://127.0.0.1:1234".
BANNER_LINE = re.compile(r"^\s*([A-Za-z][\w .()/-]*?):\s+(\S+)\s*$")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


def gateway_binary() -> Path:
    """``$IDENTITY_GATEWAY_BIN``, else ``<repo>/target/debug/identity-gateway``."""
    path = Path(os.environ.get("IDENTITY_GATEWAY_BIN") or REPO / "target" / "debug" / "identity-gateway")
    if not path.is_file():
        raise RuntimeError(
            f"no gateway binary at {path}: run `cargo build --bin identity-gateway` "
            "(scripts/polyglot-tests.sh does) or set IDENTITY_GATEWAY_BIN"
        )
    return path


@dataclass
class Emulator:
    """What the running gateway's banner announced."""

    lines: List[str]
    labels: Dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, lines: List[str]) -> "Emulator":
        labels = {}
        for line in lines:
            m = BANNER_LINE.match(line)
            if m:
                labels.setdefault(m.group(1).strip().lower(), m.group(2))
        return cls(lines=lines, labels=labels)

    def label(self, *candidates: str) -> Optional[str]:
        """The value of the first label containing every word of a candidate."""
        for candidate in candidates:
            words = candidate.lower().split()
            for label, value in self.labels.items():
                if all(w in label for w in words):
                    return value
        return None

    def require(self, what: str, *candidates: str) -> str:
        value = self.label(*candidates)
        if value is None:
            raise AssertionError(
                f"the --emulator banner names no {what} (looked for {candidates}); it said:\n" + "\n".join(self.lines)
            )
        return value

    @property
    def ca_file(self) -> str:
        return self.require("test CA", "test ca", "emulator ca")

    def fake_url(self, what: str, *candidates: str) -> str:
        return self.require(what, *candidates)


class GatewayProcess:
    """One ``identity-gateway --emulator`` child process."""

    def __init__(self, workdir: Path, extra_args: Optional[List[str]] = None, socket_name: str = "gw.sock") -> None:
        self.workdir = workdir
        self.socket = workdir / socket_name
        self.stderr_path = workdir / "gateway.stderr"
        self._lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.stdout_lines: List[str] = []
        args = [str(gateway_binary()), "--emulator", "--socket", str(self.socket), *(extra_args or [])]
        env = dict(os.environ, IDENTITY_GATEWAY_LOG=os.environ.get("IDENTITY_GATEWAY_TEST_LOG", "info"))
        env.pop("IDENTITY_GATEWAY_SOCKET", None)
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            args,
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        self.emulator: Optional[Emulator] = None

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def _fail(self, why: str) -> AssertionError:
        return AssertionError(
            f"{why}\n--- stdout ---\n" + "\n".join(self.stdout_lines) + "\n--- stderr ---\n" + self.stderr()
        )

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """Polls grpc.health.v1 on the socket. Each attempt waits for the
        channel to connect (gRPC's own backoff), so there is no sleep here;
        attempts are bounded and the child's early exit ends the wait."""
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(f"unix:{self.socket}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for _attempt in range(100):
                if self.proc.poll() is not None:
                    raise self._fail(f"the gateway exited with {self.proc.returncode} before serving")
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=min(left, 2.0), wait_for_ready=True)
                except grpc.RpcError as error:
                    if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        continue
                    raise
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        raise self._fail(f"the gateway was not healthy on {self.socket} within {timeout}s")

    def read_stdout_until(self, predicate, timeout: float = START_TIMEOUT) -> None:
        """Collects stdout lines until one satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        while not any(predicate(line) for line in self.stdout_lines):
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._fail("the gateway did not print what was expected")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise self._fail("the gateway closed stdout")
            self.stdout_lines.append(line)

    def start(self, wait_for_line: Optional[str] = None) -> "GatewayProcess":
        self.wait_healthy()
        marker = wait_for_line or "test ca:"
        self.read_stdout_until(lambda line: marker in line.lower())
        self.emulator = Emulator.parse(self.stdout_lines)
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then wait (bounded) for the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)
            raise self._fail(f"the gateway ignored SIGTERM for {timeout}s") from None
        finally:
            self._stderr.close()
