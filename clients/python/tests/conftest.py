"""Fixtures: one real gateway (``--emulator``, with the identity endpoint on)
for the whole session, a client connected to it, and the sample data the
emulator serves.

``client`` and ``connect`` are parametrized: each test using them runs once
with the sync client (``[sync]``) and once with the asyncio client behind a
sync adapter (``[aio]``, see aio_adapter.py).

The ``rpc("Name")`` marker skips a test while the gateway under test still
answers UNIMPLEMENTED for that RPC (checked at run time, once per RPC).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Callable, Dict, Iterator

import grpc
import pytest

import identity_gateway
from aio_adapter import Runner
from gateway_process import Emulator, GatewayProcess
from identity_gateway._proto import gateway_pb2 as pb
from identity_gateway._proto import gateway_pb2_grpc as pb_grpc


# ------------------------------------------------------------ sample data
# What `--emulator` seeds (emulator/src/sample.rs and each fake's seed_sample).
TENANT_ID = "dc822496-97fa-4380-991a-c8b4ba5d4f73"
SUBSCRIPTION_ID = "bc11a95a-f59f-49b7-9000-1ee2ebe3dc79"
RESOURCE_GROUP = "emulator-rg"
SYSTEM_OBJECT_ID = "72f5fd3e-9ee8-4f05-a3a0-60539e85b40e"
USER_CLIENT_ID = "a5842c85-1131-4c68-b205-cabb41b6c022"
USER_OBJECT_ID = "f41c4f2f-5b73-41a8-a4dd-a6399fc02e06"
USER_RESOURCE_ID = (
    "/subscriptions/bc11a95a-f59f-49b7-9000-1ee2ebe3dc79/resourceGroups/emulator-rg"
    "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/app-identity"
)
SECRET_NAME = "app-password"
SECRET_VALUE = "correct-horse-battery-staple"
SECRET_OLD_VALUE = "old-password"
STORAGE_ACCOUNT = "devstoreaccount1"


def jwt_claims(token: str) -> Dict[str, object]:
    """The JWT's payload, unverified (the fakes verify signatures)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


# ------------------------------------------------------------ the gateway


@pytest.fixture(scope="session")
def gateway(tmp_path_factory) -> Iterator[GatewayProcess]:
    workdir: Path = tmp_path_factory.mktemp("gateway")
    process = GatewayProcess(
        workdir,
        extra_args=["--identity-endpoint", "127.0.0.1:0"],
        socket_name="identity-gateway.sock",
    ).start(wait_for_line="identity header file:")
    yield process
    header_file = Path(process.emulator.require("identity header file", "identity header file"))
    status = process.stop()
    assert status == 0, f"the gateway exited with {status} on SIGTERM:\n{process.stderr()}"
    assert not process.socket.exists(), "the gateway removes its socket on SIGTERM"
    assert not header_file.exists(), "the gateway removes the identity header file on SIGTERM"


@pytest.fixture(scope="session")
def emulator(gateway: GatewayProcess) -> Emulator:
    assert gateway.emulator is not None
    return gateway.emulator


@pytest.fixture(params=["sync", "aio"])
def connect(request) -> Iterator[Callable[..., Any]]:
    """``identity_gateway.connect``, or ``identity_gateway.aio.connect`` whose
    client is driven through the sync adapter: same arguments, same use."""
    if request.param == "sync":
        yield identity_gateway.connect
        return
    runner = Runner()
    try:
        yield runner.connect
    finally:
        runner.close()


@pytest.fixture
def client(gateway: GatewayProcess, connect) -> Iterator[identity_gateway.Client]:
    with connect(str(gateway.socket), timeout=30) as client:
        yield client


# ------------------------------------------------------------ UNIMPLEMENTED skips

_PROBES = {
    "GetSecret": lambda stub: stub.GetSecret(pb.GetSecretRequest(), timeout=10),
    "ListDataLake": lambda stub: next(iter(stub.ListDataLake(pb.ListDataLakeRequest(), timeout=10)), None),
    "GetServiceSas": lambda stub: stub.GetServiceSas(pb.GetServiceSasRequest(), timeout=10),
    "GetResourceGroup": lambda stub: stub.GetResourceGroup(pb.GetResourceGroupRequest(), timeout=10),
    "ReadBlob": lambda stub: next(iter(stub.ReadBlob(pb.ReadBlobRequest(), timeout=10)), None),
    "QuerySql": lambda stub: next(iter(stub.QuerySql(pb.QuerySqlRequest(), timeout=10)), None),
}
_implemented: Dict[str, bool] = {}


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "rpc(name): skip while the gateway answers UNIMPLEMENTED for RPC `name`")


def _is_implemented(socket: Path, rpc: str) -> bool:
    if rpc not in _implemented:
        with grpc.insecure_channel(f"unix:{socket}") as channel:
            try:
                _PROBES[rpc](pb_grpc.IdentityGatewayStub(channel))
                _implemented[rpc] = True
            except grpc.RpcError as error:
                _implemented[rpc] = error.code() != grpc.StatusCode.UNIMPLEMENTED
    return _implemented[rpc]


def skip_unless_implemented(socket: Path, *rpcs: str) -> None:
    # Every RPC is served now: an UNIMPLEMENTED answer is a regression, not a skip.
    for rpc in rpcs:
        if rpc in _PROBES and not _is_implemented(socket, rpc):
            pytest.fail(f"{rpc} answers UNIMPLEMENTED in this gateway build")


@pytest.fixture(autouse=True)
def _skip_unimplemented_rpcs(request) -> None:
    marker = request.node.get_closest_marker("rpc")
    if marker is not None:
        skip_unless_implemented(request.getfixturevalue("gateway").socket, *marker.args)
