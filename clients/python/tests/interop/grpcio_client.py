"""A plain grpcio client, as a new user writes one: stubs generated from
proto/identity_gateway/v1/gateway.proto with grpcio-tools (not the
identity_gateway package), ``grpc.insecure_channel(TARGET)`` with default
options. Checks health, lists services through reflection, calls GetToken.

    python grpcio_client.py TARGET [RESOURCE]

Run in its own process so its generated modules never meet the package's.
Prints no token, only what it is for."""

from __future__ import annotations

import base64
import importlib
import json
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import grpc
import grpc_tools
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_tools import protoc

REPO = Path(__file__).resolve().parents[4]


def generate_stubs(out: Path) -> None:
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        # The file's own directory as include root: the modules are then
        # gateway_pb2(_grpc), which cannot clash with the installed
        # identity_gateway package this venv also has.
        f"-I{REPO / 'proto' / 'identity_gateway' / 'v1'}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        str(REPO / "proto" / "identity_gateway" / "v1" / "gateway.proto"),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("grpc_tools.protoc failed")


def audience(jwt: str) -> str:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["aud"]


def main() -> None:
    target = sys.argv[1]
    resource = sys.argv[2] if len(sys.argv) > 2 else "https://vault.azure.net"
    with tempfile.TemporaryDirectory() as out:
        generate_stubs(Path(out))
        sys.path.insert(0, out)
        pb = importlib.import_module("gateway_pb2")
        pb_grpc = importlib.import_module("gateway_pb2_grpc")

    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        print("health:", health_pb2.HealthCheckResponse.ServingStatus.Name(health.status))

        services = sorted(ProtoReflectionDescriptorDatabase(channel).get_services())
        print("services:", " ".join(services))

        reply = pb_grpc.IdentityGatewayStub(channel).GetToken(pb.GetTokenRequest(resource=resource), timeout=30)
        expires = datetime.fromtimestamp(reply.expires_on.seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        print(f"token for {reply.resource} ({reply.token_type}, aud {audience(reply.access_token)}), expires {expires}")


if __name__ == "__main__":
    main()
