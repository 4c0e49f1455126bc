"""GetToken and WatchToken through the Python client, against the real
gateway and the emulator's IMDS."""

from datetime import datetime, timedelta, timezone

import pytest

import identity_gateway
from conftest import SYSTEM_OBJECT_ID, TENANT_ID, USER_CLIENT_ID, USER_OBJECT_ID, USER_RESOURCE_ID, jwt_claims
from identity_gateway import ManagedIdentity

VAULT = "https://vault.azure.net"


def test_system_assigned_token_is_for_the_resource_asked(client):
    token = client.get_token(VAULT)
    claims = jwt_claims(token.access_token)
    assert claims["aud"] == VAULT
    assert claims["oid"] == SYSTEM_OBJECT_ID
    assert claims["iss"] == f"https://sts.windows.net/{TENANT_ID}/"
    assert token.resource == VAULT
    assert token.token_type == "Bearer"
    assert token.expires_on.tzinfo is not None
    assert token.expires_on_epoch == claims["exp"]
    assert token.expires_on > datetime.now(timezone.utc) + timedelta(minutes=5)
    assert token.access_token not in repr(token)


def test_a_trailing_slash_is_another_audience(client):
    with_slash = client.get_token(VAULT + "/")
    assert jwt_claims(with_slash.access_token)["aud"] == VAULT + "/"
    assert with_slash.access_token != client.get_token(VAULT).access_token


@pytest.mark.parametrize(
    "identity",
    [
        ManagedIdentity(client_id=USER_CLIENT_ID),
        ManagedIdentity(object_id=USER_OBJECT_ID),
        ManagedIdentity(resource_id=USER_RESOURCE_ID),
        {"client_id": USER_CLIENT_ID},
    ],
    ids=["client_id", "object_id", "resource_id", "mapping"],
)
def test_user_assigned_identities_are_selected(client, identity):
    token = client.get_token("https://storage.azure.com/", identity)
    claims = jwt_claims(token.access_token)
    assert claims["oid"] == USER_OBJECT_ID
    assert claims["aud"] == "https://storage.azure.com/"


def test_a_v2_scope_is_an_invalid_argument_naming_the_field(client):
    with pytest.raises(identity_gateway.InvalidArgument) as caught:
        client.get_token(VAULT + "/.default")
    assert "resource" in caught.value.message
    assert caught.value.code.name == "INVALID_ARGUMENT"
    assert isinstance(caught.value, identity_gateway.GatewayError)


def test_an_identity_not_on_the_vm_is_identity_unavailable(client):
    with pytest.raises(identity_gateway.IdentityUnavailable):
        client.get_token(VAULT, ManagedIdentity(client_id="00000000-0000-0000-0000-000000000001"))


def test_bad_selectors_fail_before_any_call():
    with pytest.raises(ValueError):
        ManagedIdentity(client_id="a", object_id="b")


def test_no_gateway_is_unavailable(tmp_path, connect):
    with connect(str(tmp_path / "nobody.sock"), timeout=5) as client:
        with pytest.raises(identity_gateway.Unavailable):
            client.get_token(VAULT)


def test_socket_comes_from_the_environment(gateway, monkeypatch, connect):
    monkeypatch.setenv("IDENTITY_GATEWAY_SOCKET", str(gateway.socket))
    with connect() as client:
        assert client.get_token(VAULT).resource == VAULT


def test_watch_token_yields_the_current_token_first(client):
    current = client.get_token("https://management.azure.com/")
    watch = client.watch_token("https://management.azure.com/")
    first = next(watch)
    watch.close()  # cancels the stream
    assert first.access_token == current.access_token
    assert first.expires_on == current.expires_on
