"""Third-party gRPC clients, each with its default options, against the
session's gateway over its socket: Python grpcio (stubs generated here with
grpcio-tools), grpcurl, grpc-go and grpc-java. Each checks health, reflection
and GetToken (the token's audience, never the token). They send the socket
path as HTTP/2 `:authority` in most of these address forms, which the
gateway's HTTP/2 stack used to refuse (issue 9). grpc-js is covered by the
README's Node block (test_docs.py).

The tools come from scripts/tools/*.sh; a missing one fails under
IDENTITY_GATEWAY_REQUIRE_TOOLS=1 (the polyglot suite) and skips otherwise."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest

from conftest import jwt_claims
from docs import REPO, require_tool

RESOURCE = "https://vault.azure.net"
TOKEN_LINE = re.compile(
    r"token for (?P<resource>\S+) \((?P<type>\w+), aud (?P<aud>\S+)\), expires \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
)
TIMEOUT = 120


def _run(argv: List[str], **kwargs) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, **kwargs)
    assert done.returncode == 0, f"{argv}\n--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
    return done.stdout


def _check_example_output(out: str) -> None:
    """The shared output of the Python, Go and Java clients."""
    assert "eyJ" not in out, "the example printed the token"
    assert "health: SERVING" in out.splitlines(), out
    services = next(line for line in out.splitlines() if line.startswith("services:")).split()[1:]
    assert "identity_gateway.v1.IdentityGateway" in services and "grpc.health.v1.Health" in services, services
    m = TOKEN_LINE.search(out)
    assert m, out
    assert (m["resource"], m["type"], m["aud"]) == (RESOURCE, "Bearer", RESOURCE), m.groups()


def _targets(sock: Path) -> dict:
    assert sock.is_absolute()
    return {"unix-triple-slash": f"unix://{sock}", "unix-single-slash": f"unix:{sock}"}


# ------------------------------------------------------------ Python grpcio


@pytest.mark.parametrize("form", ["unix-triple-slash", "unix-single-slash"])
def test_grpcio_with_generated_stubs(gateway, form):
    out = _run([sys.executable, str(Path(__file__).parent / "interop" / "grpcio_client.py"), _targets(gateway.socket)[form], RESOURCE])
    _check_example_output(out)


# ------------------------------------------------------------ grpcurl


def _grpcurl_address_forms(sock: Path) -> dict:
    """Flags, address and the directory to run in, per address form."""
    return {
        "unix-triple-slash": ([], f"unix://{sock}", None),
        "unix-single-slash": ([], f"unix:{sock}", None),
        # grpcurl's -unix is a boolean flag: the address is then the path.
        "unix-flag": (["-unix"], str(sock), None),
        "unix-relative": ([], f"unix:{sock.name}", sock.parent),
    }


@pytest.mark.parametrize("form", ["unix-triple-slash", "unix-single-slash", "unix-flag", "unix-relative"])
def test_grpcurl(gateway, form):
    grpcurl = require_tool(str(REPO / ".tools" / "bin" / "grpcurl"), "scripts/tools/grpcurl.sh installs it")
    form_flags, address, cwd = _grpcurl_address_forms(gateway.socket)[form]

    def call(*flags: str, verb: str) -> str:
        # Flags before the address: grpcurl stops reading flags at the first positional argument.
        return _run([grpcurl, "-plaintext", *form_flags, *flags, address, verb], cwd=cwd)

    assert json.loads(call(verb="grpc.health.v1.Health/Check"))["status"] == "SERVING"
    listed = call(verb="list").split()
    assert "identity_gateway.v1.IdentityGateway" in listed and "grpc.health.v1.Health" in listed, listed
    data = json.dumps({"resource": RESOURCE})
    reply = json.loads(call("-d", data, verb="identity_gateway.v1.IdentityGateway/GetToken"))
    assert reply["resource"] == RESOURCE and reply["tokenType"] == "Bearer"
    assert jwt_claims(reply["accessToken"])["aud"] == RESOURCE


# ------------------------------------------------------------ grpc-go


@pytest.mark.parametrize("form", ["unix-triple-slash", "unix-single-slash", "unix-relative"])
def test_grpc_go(gateway, form):
    binary = require_tool(str(REPO / ".tools" / "bin" / "grpc-go-example"), "scripts/tools/go.sh builds it")
    targets = dict(_targets(gateway.socket), **{"unix-relative": f"unix:{gateway.socket.name}"})
    out = _run([binary, "-target", targets[form], RESOURCE], cwd=gateway.socket.parent)
    _check_example_output(out)


# ------------------------------------------------------------ grpc-java


def test_grpc_java_netty_epoll_domain_socket(gateway):
    java = require_tool("java", "a JDK is on the polyglot machines")
    classpath_file = REPO / ".tools" / "java-example.classpath"
    require_tool(str(classpath_file), "scripts/tools/java.sh builds clients/java")
    classes = REPO / "clients" / "java" / "target" / "classes"
    classpath = f"{classes}{os.pathsep}{classpath_file.read_text().strip()}"
    env = dict(os.environ, IDENTITY_GATEWAY_SOCKET=str(gateway.socket))
    out = _run([java, "-cp", classpath, "identitygateway.example.GetToken", RESOURCE], env=env)
    _check_example_output(out)


# ------------------------------------------------------------ what the gateway logs


def test_a_protocol_error_on_the_socket_is_logged_with_the_peer(gateway):
    """HTTP/1.1 on the gRPC socket: one warn line naming this process."""
    before = gateway.stderr().count("protocol error on a local connection")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(str(gateway.socket))
        conn.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        try:
            while conn.recv(4096):  # the gateway answers GOAWAY and closes
                pass
        except ConnectionResetError:  # closed with our request unread
            pass
    deadline = time.monotonic() + 10
    while True:
        lines = [l for l in gateway.stderr().splitlines() if "protocol error on a local connection" in l]
        if len(lines) > before or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(lines) == before + 1, gateway.stderr()[-2000:]
    line = lines[-1]
    assert "WARN" in line and f"pid={os.getpid()}" in line and f"uid={os.getuid()}" in line, line
    assert "hint" in line, line
