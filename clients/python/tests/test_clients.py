"""The sync and asyncio clients side by side: one API, and arguments checked
before any I/O (the fixtures run each check with both clients)."""

import inspect
from datetime import timedelta

import pytest

import identity_gateway
import identity_gateway.aio
from identity_gateway import Client
from identity_gateway.aio import AsyncBlobStream, AsyncClient, AsyncSqlQuery

# Streamed RPCs: async iterators (or objects wrapping one) in AsyncClient, not coroutines.
STREAMED = {"watch_token", "list_data_lake", "list_data_lake_pages", "query_sql"}


def _public(cls):
    return {name for name in vars(cls) if not name.startswith("_") and callable(getattr(cls, name))}


def test_both_clients_have_the_same_methods():
    assert _public(Client) == _public(AsyncClient)


@pytest.mark.parametrize("name", sorted(_public(Client) - {"close"}))
def test_each_method_takes_the_same_arguments(name):
    sync, aio = getattr(Client, name), getattr(AsyncClient, name)
    sync_params = list(inspect.signature(sync).parameters.values())
    aio_params = list(inspect.signature(aio).parameters.values())
    assert [(p.name, p.kind, p.default, p.annotation) for p in aio_params] == [
        (p.name, p.kind, p.default, p.annotation) for p in sync_params
    ]
    assert inspect.iscoroutinefunction(aio) == (name not in STREAMED)
    assert aio.__doc__ and aio.__doc__ == sync.__doc__


def test_connect_takes_the_same_arguments():
    assert (
        inspect.signature(identity_gateway.aio.connect).parameters
        == inspect.signature(identity_gateway.connect).parameters
    )


def test_async_streams_are_async_context_managers():
    for cls in (AsyncBlobStream, AsyncSqlQuery):
        assert hasattr(cls, "__aenter__") and hasattr(cls, "__aexit__") and hasattr(cls, "aclose")


@pytest.fixture
def offline(tmp_path, connect):
    """A client whose gateway does not exist: any call that reaches I/O fails
    with Unavailable, so a ValueError/TypeError proves the check came first."""
    with connect(str(tmp_path / "nobody.sock"), timeout=5) as client:
        yield client


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.get_secret("s"),
        lambda c: c.get_secret("s", vault_url="https://v.vault.azure.net", vault_name="v"),
        lambda c: c.get_secret("s", vault_name="v", cloud="mars"),
        lambda c: c.get_token("https://vault.azure.net", {"tenant_id": "x"}),
        lambda c: c.get_resource_group("sub", "rg", cloud="mars"),
        lambda c: c.get_service_sas("acct", "c", method="shared_key"),
        lambda c: c.list_data_lake("https://a.dfs.core.windows.net", generation=3),
        lambda c: c.list_data_lake_pages("https://a.dfs.core.windows.net", generation="gen3"),
        lambda c: c.query_sql("s.database.windows.net", "db", "SELECT 1", row_type=list),
        lambda c: c.query_sql("s.database.windows.net", "db", "SELECT @P1", [2**63]),
    ],
    ids=[
        "secret-no-vault",
        "secret-two-vaults",
        "secret-cloud",
        "token-identity-keys",
        "resource-group-cloud",
        "sas-method",
        "datalake-generation",
        "datalake-pages-generation",
        "sql-row-type",
        "sql-parameter",
    ],
)
def test_bad_arguments_fail_before_any_call(offline, call):
    with pytest.raises(ValueError):
        result = call(offline)
        list(result)  # streamed RPCs: the first step would be I/O


def test_a_bad_identity_type_is_a_type_error(offline):
    with pytest.raises(TypeError):
        offline.watch_token("https://vault.azure.net", identity=42)


@pytest.mark.parametrize("expires_in", [timedelta(minutes=5), 300, 300.0])
def test_good_arguments_reach_the_gateway(offline, expires_in):
    with pytest.raises(identity_gateway.Unavailable):
        offline.get_service_sas("acct", "c", "b", permissions="r", expires_in=expires_in, method="user-delegation")
