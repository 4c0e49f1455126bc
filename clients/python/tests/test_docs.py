"""Runs the docs' snippets (grpcurl, Node, Python, unmodified SDK) exactly as
written against the session's `--emulator` gateway, so the docs and the
product cannot drift apart."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SECRET_NAME, SECRET_VALUE, jwt_claims, skip_unless_implemented
from docs import REPO, shell_commands, snippets, require_tool

GRPCURL_BLOCKS = snippets("grpcurl")
GRPCURL_COMMANDS = list(dict.fromkeys(c for block in GRPCURL_BLOCKS for c in shell_commands(block)))
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
RUN_TIMEOUT = 60


def _rpc_of(command: str) -> str:
    m = re.search(r"identity_gateway\.v1\.IdentityGateway/(\w+)", command)
    if m:
        return m.group(1)
    return "list" if re.search(r"\slist\s*$", command) else "other"


def _emulator_env(emulator, gateway) -> dict:
    env = dict(os.environ)
    env["IDENTITY_GATEWAY_SOCKET"] = str(gateway.socket)
    for name, labels in (
        ("VAULT_URL", ("key vault", "keyvault", "vault")),
        ("SQL_SERVER", ("sql",)),
    ):
        value = emulator.label(*labels)
        if value:
            env[name] = re.sub(r"^\w+://", "", value) if name == "SQL_SERVER" else value
    return env


def test_the_docs_have_every_kind_of_snippet():
    for kind in ("grpcurl", "node", "python", "sdk", "go", "java"):
        assert snippets(kind), f"no `<!-- test: {kind} -->` block in README.md"
    shown = {_rpc_of(c) for c in GRPCURL_COMMANDS}
    assert {"list", "GetToken", "GetSecret", "QuerySql"} <= shown, shown


@pytest.mark.parametrize(
    "command",
    [c for c in GRPCURL_COMMANDS if not ASSIGNMENT.match(c)],
    ids=lambda c: f"{_rpc_of(c)}-{GRPCURL_COMMANDS.index(c)}",
)
def test_grpcurl_command(command, gateway, emulator):
    rpc = _rpc_of(command)
    skip_unless_implemented(gateway.socket, rpc)
    grpcurl = require_tool(str(REPO / ".tools" / "bin" / "grpcurl"), "scripts/tools/grpcurl.sh installs it")
    banner = "\n".join(emulator.lines)
    for port in re.findall(r"localhost:(\d+)", command):
        assert f":{port}" in banner, (
            f"the docs call port {port}, which this --emulator does not serve (another emulator holding the "
            f"fixed ports?), or it does not serve that fake yet:\n{banner}"
        )
    env = _emulator_env(emulator, gateway)
    env["PATH"] = f"{Path(grpcurl).parent}{os.pathsep}{env['PATH']}"
    assignments = [c for c in GRPCURL_COMMANDS if ASSIGNMENT.match(c)]
    script = "\n".join(["set -euo pipefail", *assignments, command])
    done = subprocess.run(
        ["bash", "-c", script], cwd=gateway.workdir, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    assert done.returncode == 0, f"{command}\n--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
    out = done.stdout
    data = re.search(r"-d '([^']*)'", command)
    sent = json.loads(data.group(1)) if data else {}
    if rpc == "list":
        assert "identity_gateway.v1.IdentityGateway" in out.split()
        assert "grpc.health.v1.Health" in out.split()
    elif rpc == "other" and "grpc.health.v1.Health/Check" in command:
        assert json.loads(out)["status"] == "SERVING"
    elif rpc == "GetToken":
        reply = json.loads(out)
        assert jwt_claims(reply["accessToken"])["aud"] == sent["resource"]
        assert reply["resource"] == sent["resource"]
    elif rpc == "GetSecret":
        reply = json.loads(out)
        assert reply["name"] == SECRET_NAME
        assert reply["value"] == SECRET_VALUE
    elif rpc == "ListDataLake":
        assert '"entries"' in out and '"name"' in out, out
    elif rpc == "GetServiceSas":
        reply = json.loads(out)
        assert "sig=" in reply["sasToken"] and reply["url"].startswith("https://"), reply.keys()
    elif rpc == "ReadBlob":
        assert '"properties"' in out and '"data"' in out, out
    elif rpc == "GetResourceGroup":
        assert json.loads(out)["name"] == sent["name"]
    elif rpc == "QuerySql":
        assert '"columns"' in out and '"rows"' in out and '"done"' in out, out
        assert "Widget" in out, out
    else:
        pytest.fail(f"no check for grpcurl command {command!r}: add one")


def test_node_example(gateway, emulator):
    node = require_tool("node", "Node.js is on the polyglot machines")
    if not (REPO / "clients" / "node" / "node_modules" / "@grpc" / "grpc-js").is_dir():
        require_tool(
            str(REPO / "clients" / "node" / "node_modules" / "@grpc" / "grpc-js" / "package.json"),
            "scripts/tools/node.sh installs it",
        )
    env = _emulator_env(emulator, gateway)
    env["PATH"] = f"{Path(node).parent}{os.pathsep}{env['PATH']}"
    for block in snippets("node"):
        done = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + block],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        assert done.returncode == 0, done.stderr
        assert re.search(r"token for https://vault\.azure\.net \(Bearer\), expires \d{4}-\d\d-\d\dT", done.stdout), (
            done.stdout
        )
        assert "eyJ" not in done.stdout + done.stderr, "the example must not print the token"
    # Errors come out as the gRPC status, and a non-zero exit.
    bad = subprocess.run(
        [node, "clients/node/example.js", "https://vault.azure.net/.default"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert bad.returncode == 1
    assert "INVALID_ARGUMENT" in bad.stderr


@pytest.mark.rpc("GetSecret", "QuerySql")
def test_python_snippet(gateway, emulator):
    env = _emulator_env(emulator, gateway)
    env["REQUESTS_CA_BUNDLE"] = emulator.ca_file
    for block in snippets("python"):
        done = subprocess.run(
            [sys.executable, "-c", block],
            cwd=gateway.workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        assert done.returncode == 0, f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
        assert "token for https://vault.azure.net expires" in done.stdout
        assert f"app-password has {len(SECRET_VALUE)} characters" in done.stdout
        assert "1 Widget 19.99" in done.stdout
        assert "via SecretClient: app-password" in done.stdout


def test_sdk_snippet(gateway, emulator):
    env = _emulator_env(emulator, gateway)
    env["IDENTITY_ENDPOINT"] = emulator.require("identity endpoint", "identity endpoint")
    env["IDENTITY_HEADER"] = Path(emulator.require("identity header file", "identity header file")).read_text()
    env["NO_PROXY"] = "127.0.0.1,localhost"
    for name in ("MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT", "IDENTITY_SERVER_THUMBPRINT", "AZURE_CLIENT_ID"):
        env.pop(name, None)
    for block in snippets("sdk"):
        done = subprocess.run(
            [sys.executable, "-c", block], env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
        )
        assert done.returncode == 0, done.stderr
        assert re.search(r"expires_on \d{10}", done.stdout), done.stdout


def test_the_banners_grpcurl_commands_work(gateway, emulator):
    """What `--emulator` tells a newcomer to paste must work as printed."""
    grpcurl = require_tool(str(REPO / ".tools" / "bin" / "grpcurl"), "scripts/tools/grpcurl.sh installs it")
    commands = [line.strip() for line in emulator.lines if line.strip().startswith("grpcurl ")]
    assert commands, "the banner shows no grpcurl command"
    env = dict(os.environ, PATH=f"{Path(grpcurl).parent}{os.pathsep}{os.environ['PATH']}")
    for command in commands:
        skip_unless_implemented(gateway.socket, _rpc_of(command))
        done = subprocess.run(
            ["bash", "-c", command], cwd=gateway.workdir, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
        )
        assert done.returncode == 0 and done.stdout.strip(), f"{command}\n{done.stdout}\n{done.stderr}"


def _check_example_output(out: str) -> None:
    """What clients/go and clients/java print for https://vault.azure.net."""
    assert "health: SERVING" in out.splitlines(), out
    assert re.search(r"^services: .*\bidentity_gateway\.v1\.IdentityGateway\b", out, re.M), out
    assert re.search(
        r"token for https://vault\.azure\.net \(Bearer, aud https://vault\.azure\.net\), expires \d{4}-\d\d-\d\dT", out
    ), out
    assert "eyJ" not in out, "the example must not print the token"


def test_go_example(gateway, emulator):
    go = require_tool("go", "Go is on the polyglot machines")
    # scripts/tools/go.sh filled this module cache; GOFLAGS=-mod=readonly keeps go.sum as pinned.
    require_tool(str(REPO / ".tools" / "bin" / "grpc-go-example"), "scripts/tools/go.sh builds it")
    tools = REPO / ".tools" / "go"
    env = _emulator_env(emulator, gateway)
    env.update(
        PATH=f"{Path(go).parent}{os.pathsep}{env['PATH']}",
        GOPATH=str(tools),
        GOMODCACHE=str(tools / "pkg" / "mod"),
        GOCACHE=str(tools / "cache"),
        GOFLAGS="-modcacherw -mod=readonly",
        GOTOOLCHAIN="local",
    )
    for block in snippets("go"):
        done = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + block], cwd=REPO, env=env, capture_output=True, text=True,
            timeout=RUN_TIMEOUT * 3,
        )
        assert done.returncode == 0, f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
        _check_example_output(done.stdout)


def test_java_example(gateway, emulator):
    mvn = require_tool("mvn", "Maven is on the polyglot machines")
    require_tool(str(REPO / ".tools" / "java-example.classpath"), "scripts/tools/java.sh builds clients/java")
    env = _emulator_env(emulator, gateway)
    # scripts/tools/java.sh filled this local repository.
    env["MAVEN_OPTS"] = f"-Dmaven.repo.local={REPO / '.tools' / 'm2'}"
    env["PATH"] = f"{Path(mvn).parent}{os.pathsep}{env['PATH']}"
    for block in snippets("java"):
        done = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + block], cwd=REPO, env=env, capture_output=True, text=True,
            timeout=RUN_TIMEOUT * 3,
        )
        assert done.returncode == 0, f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
        _check_example_output(done.stdout)
