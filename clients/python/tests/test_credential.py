"""GatewayCredential (sync and async) as azure-core sees it."""

import asyncio
import http.server
import threading

import pytest
from azure.core.credentials import AccessToken, AccessTokenInfo, SupportsTokenInfo, TokenCredential
from azure.core.pipeline import Pipeline
from azure.core.pipeline.policies import BearerTokenCredentialPolicy
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest

import identity_gateway
from conftest import USER_CLIENT_ID, USER_OBJECT_ID, jwt_claims
from identity_gateway import GatewayCredential
from identity_gateway.aio import GatewayCredential as AsyncGatewayCredential


def test_it_is_a_token_credential(gateway):
    with GatewayCredential(socket_path=str(gateway.socket)) as credential:
        assert isinstance(credential, TokenCredential)
        assert isinstance(credential, SupportsTokenInfo)
        token = credential.get_token("https://vault.azure.net/.default")
    assert isinstance(token, AccessToken)
    assert jwt_claims(token.token)["aud"] == "https://vault.azure.net"
    assert token.expires_on == jwt_claims(token.token)["exp"]


def test_get_token_info_and_client_id(gateway):
    with GatewayCredential(client_id=USER_CLIENT_ID, socket_path=str(gateway.socket)) as credential:
        info = credential.get_token_info("https://management.azure.com//.default")
    assert isinstance(info, AccessTokenInfo)
    claims = jwt_claims(info.token)
    assert claims["aud"] == "https://management.azure.com/"
    assert claims["oid"] == USER_OBJECT_ID
    assert info.token_type == "Bearer"


def test_socket_from_the_environment(gateway, monkeypatch):
    monkeypatch.setenv("IDENTITY_GATEWAY_SOCKET", str(gateway.socket))
    with GatewayCredential() as credential:
        assert credential.get_token("https://storage.azure.com/.default").token


def test_what_a_managed_identity_cannot_do_is_refused(gateway):
    with GatewayCredential(socket_path=str(gateway.socket)) as credential:
        with pytest.raises(ValueError):
            credential.get_token("https://a/.default", "https://b/.default")
        with pytest.raises(ValueError):
            credential.get_token("https://vault.azure.net/.default", claims='{"access_token":{}}')
        with pytest.raises(identity_gateway.InvalidArgument):
            credential.get_token("https://vault.azure.net/.default/.default")


def test_an_azure_core_pipeline_sends_its_token(gateway):
    seen = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with GatewayCredential(socket_path=str(gateway.socket)) as credential:
            policy = BearerTokenCredentialPolicy(credential, "https://management.azure.com/.default")
            transport = RequestsTransport(session=_no_proxy_session())
            with Pipeline(transport, policies=[policy]) as pipeline:
                url = f"http://127.0.0.1:{server.server_address[1]}/probe"
                response = pipeline.run(HttpRequest("GET", url), enforce_https=False)
        assert response.http_response.status_code == 204
    finally:
        server.shutdown()
        server.server_close()
    assert len(seen) == 1 and seen[0].startswith("Bearer ")
    assert jwt_claims(seen[0][len("Bearer ") :])["aud"] == "https://management.azure.com"


def _no_proxy_session():
    import requests

    session = requests.Session()
    session.trust_env = False
    return session


def test_async_credential(gateway):
    async def main():
        async with AsyncGatewayCredential(socket_path=str(gateway.socket), client_id=USER_CLIENT_ID) as credential:
            token = await credential.get_token("https://vault.azure.net/.default")
            info = await credential.get_token_info("https://vault.azure.net/.default")
        return token, info

    token, info = asyncio.run(main())
    assert jwt_claims(token.token)["oid"] == USER_OBJECT_ID
    assert info.token == token.token, "the gateway's cache answers both"


def test_async_client(gateway):
    async def main():
        async with identity_gateway.aio.connect(str(gateway.socket)) as client:
            token = await client.get_token("https://vault.azure.net")
            watch = client.watch_token("https://vault.azure.net")
            first = await watch.__anext__()
            await watch.aclose()
            with pytest.raises(identity_gateway.InvalidArgument):
                await client.get_token("")
        return token, first

    token, first = asyncio.run(main())
    assert first.access_token == token.access_token
