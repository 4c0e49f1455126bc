"""GetSecret through the Python client, and a real azure-keyvault-secrets
SecretClient whose credential is GatewayCredential, against the emulator's
Key Vault over HTTPS (its test CA)."""

import re
from datetime import datetime

import pytest
from azure.keyvault.secrets import SecretClient

import identity_gateway
from conftest import SECRET_NAME, SECRET_OLD_VALUE, SECRET_VALUE
from identity_gateway import GatewayCredential

pytestmark = pytest.mark.rpc("GetSecret")


@pytest.fixture
def vault_url(_skip_unimplemented_rpcs, emulator):
    return emulator.fake_url("Key Vault", "key vault", "keyvault", "vault")


def test_the_latest_version_is_read(client, vault_url):
    secret = client.get_secret(SECRET_NAME, vault_url=vault_url)
    assert secret.value == SECRET_VALUE
    assert secret.name == SECRET_NAME
    assert re.fullmatch(r"[0-9a-f]{32}", secret.version), secret.version
    assert secret.id.endswith(f"/secrets/{SECRET_NAME}/{secret.version}")
    assert secret.enabled
    assert isinstance(secret.created, datetime) and secret.created.tzinfo is not None
    assert SECRET_VALUE not in repr(secret)


def test_content_type_and_tags(client, vault_url):
    secret = client.get_secret("db-connection", vault_url=vault_url)
    assert secret.content_type == "text/plain"
    assert secret.tags == {"env": "emulator", "owner": "identity-gateway"}
    assert secret.value.startswith("Server=tcp:")


def test_a_missing_secret_is_not_found(client, vault_url):
    with pytest.raises(identity_gateway.NotFound):
        client.get_secret("no-such-secret", vault_url=vault_url)


def test_a_bad_name_is_an_invalid_argument(client, vault_url):
    with pytest.raises(identity_gateway.InvalidArgument) as caught:
        client.get_secret("bad_name!", vault_url=vault_url)
    assert "name" in caught.value.message


def test_a_host_outside_key_vault_gets_no_token(client):
    with pytest.raises(identity_gateway.InvalidArgument) as caught:
        client.get_secret(SECRET_NAME, vault_url="https://evil.example")
    assert "vault" in caught.value.message


def test_secret_client_with_gateway_credential(gateway, vault_url, emulator, client, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    credential = GatewayCredential(socket_path=str(gateway.socket))
    secrets = SecretClient(
        vault_url=vault_url,
        credential=credential,
        verify_challenge_resource=False,  # the emulator's vault is on localhost
        connection_verify=emulator.ca_file,
    )
    with secrets, credential:
        assert secrets.get_secret(SECRET_NAME).value == SECRET_VALUE
        versions = list(secrets.list_properties_of_secret_versions(SECRET_NAME))
    assert len(versions) == 2
    old = [v for v in versions if v.version != client.get_secret(SECRET_NAME, vault_url=vault_url).version]
    assert len(old) == 1
    # The SDK's version id, read back through the gateway.
    assert client.get_secret(SECRET_NAME, vault_url=vault_url, version=old[0].version).value == SECRET_OLD_VALUE
