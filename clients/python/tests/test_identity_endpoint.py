"""Unmodified azure-identity against the gateway's App Service-compatible
identity endpoint: only IDENTITY_ENDPOINT and IDENTITY_HEADER are set."""

import os
import stat
from pathlib import Path

import pytest
import requests
from azure.identity import ManagedIdentityCredential

from conftest import SYSTEM_OBJECT_ID, USER_CLIENT_ID, USER_OBJECT_ID, jwt_claims


@pytest.fixture
def identity_env(emulator, monkeypatch):
    endpoint = emulator.require("identity endpoint", "identity endpoint")
    header_file = Path(emulator.require("identity header file", "identity header file"))
    for name in ("MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT", "IDENTITY_SERVER_THUMBPRINT", "AZURE_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", header_file.read_text())
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return endpoint, header_file


def test_the_header_file_is_for_the_socket_group_only(identity_env):
    _, header_file = identity_env
    mode = stat.S_IMODE(os.stat(header_file).st_mode)
    assert mode == 0o640
    assert len(header_file.read_text()) >= 64


def test_managed_identity_credential_gets_a_token(identity_env, client):
    credential = ManagedIdentityCredential()
    token = credential.get_token("https://vault.azure.net/.default")
    claims = jwt_claims(token.token)
    assert claims["aud"] == "https://vault.azure.net"
    assert claims["oid"] == SYSTEM_OBJECT_ID
    assert token.expires_on == claims["exp"]
    # One cache behind both faces of the gateway.
    assert client.get_token("https://vault.azure.net").access_token == token.token


def test_managed_identity_credential_with_a_client_id(identity_env):
    credential = ManagedIdentityCredential(client_id=USER_CLIENT_ID)
    token = credential.get_token("https://storage.azure.com/.default")
    claims = jwt_claims(token.token)
    assert claims["aud"] == "https://storage.azure.com"
    assert claims["oid"] == USER_OBJECT_ID


def test_requests_without_the_secret_are_refused(identity_env):
    endpoint, _ = identity_env
    query = {"resource": "https://vault.azure.net", "api-version": "2019-08-01"}
    session = requests.Session()
    session.trust_env = False
    missing = session.get(endpoint, params=query, timeout=10)
    assert missing.status_code == 400
    wrong = session.get(endpoint, params=query, headers={"X-IDENTITY-HEADER": "guess"}, timeout=10)
    assert wrong.status_code == 401
    assert "access_token" not in wrong.json()
