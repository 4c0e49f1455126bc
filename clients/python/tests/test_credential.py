"""GatewayCredential (sync and async) as azure-core sees it."""

import asyncio
import http.server
import inspect
import threading
import time

import grpc
import pytest
from azure.core.credentials import AccessToken, AccessTokenInfo, SupportsTokenInfo, TokenCredential
from azure.core.pipeline import Pipeline
from azure.core.pipeline.policies import BearerTokenCredentialPolicy
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest

import identity_gateway
from aio_adapter import Runner, Synced
from conftest import USER_CLIENT_ID, USER_OBJECT_ID, jwt_claims
from gateway_process import GatewayProcess
from identity_gateway import GatewayCredential
from identity_gateway.aio import GatewayCredential as AsyncGatewayCredential
from test_metrics import free_port, scrape, value


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


# ------------------------------------------------------------ the in-process token cache
# Counted across the real boundary: a gateway of its own with --metrics-listen,
# whose GetToken call counter says how many calls reached it.

MARGIN = 300


@pytest.fixture(scope="module")
def metered(tmp_path_factory):
    port = free_port()
    process = GatewayProcess(
        tmp_path_factory.mktemp("metered"), extra_args=["--metrics-listen", f"127.0.0.1:{port}"]
    ).start()
    process.metrics_port = port
    yield process
    assert process.stop() == 0, process.stderr()


def gateway_calls(process) -> float:
    families = scrape(process.metrics_port)
    return value(families, "identity_gateway_calls", "identity_gateway_calls_total", rpc="GetToken")


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sync", "aio"])
def credential_of(request):
    """``credential_of(**kwargs)``: a sync GatewayCredential, or the asyncio
    one driven through the sync adapter; closed after the test.
    ``wrap(client)`` turns a client into what ``client=`` takes."""
    made = []
    runner = Runner() if request.param == "aio" else None

    def make(**kwargs):
        if runner is None:
            credential = GatewayCredential(**kwargs)
        else:
            credential = Synced(runner, AsyncGatewayCredential(**kwargs))
        made.append(credential)
        return credential

    def connect(socket):
        if runner is None:
            return identity_gateway.connect(str(socket), timeout=30)

        async def connect():
            return identity_gateway.aio.connect(str(socket), timeout=30)

        return runner.run(connect())

    make.connect = connect
    make.flavour = request.param
    make.runner = runner
    try:
        yield make
    finally:
        for credential in made:
            credential.close()
        if runner is not None:
            runner.close()


class FlakyClient:
    """A real client whose get_token fails with Unavailable while ``down``."""

    def __init__(self, client, is_async: bool) -> None:
        self.client = client
        self.down = False
        self.get_token = self._get_token_async if is_async else self._get_token

    def _check(self) -> None:
        if self.down:
            raise identity_gateway.Unavailable(grpc.StatusCode.UNAVAILABLE, "the gateway is down (test)")

    def _get_token(self, resource, identity=None):
        self._check()
        return self.client.get_token(resource, identity)

    async def _get_token_async(self, resource, identity=None):
        self._check()
        return await self.client.get_token(resource, identity)


def test_a_second_call_is_answered_from_memory(metered, credential_of):
    credential = credential_of(socket_path=str(metered.socket))
    before = gateway_calls(metered)
    first = credential.get_token("https://vault.azure.net/.default")
    assert gateway_calls(metered) == before + 1
    second = credential.get_token("https://vault.azure.net/.default")
    info = credential.get_token_info("https://vault.azure.net")  # same resource, other spelling and method
    assert gateway_calls(metered) == before + 1, "the cached token answers get_token and get_token_info"
    assert second == first
    assert (info.token, info.expires_on) == (first.token, first.expires_on)
    assert first.expires_on - time.time() > MARGIN, "the emulator's tokens outlive the margin"


def test_each_resource_is_cached_apart(metered, credential_of):
    credential = credential_of(socket_path=str(metered.socket))
    before = gateway_calls(metered)
    vault = credential.get_token("https://vault.azure.net/.default")
    storage = credential.get_token("https://storage.azure.com/.default")
    assert gateway_calls(metered) == before + 2
    assert credential.get_token("https://vault.azure.net/.default") == vault
    assert credential.get_token("https://storage.azure.com/.default") == storage
    assert gateway_calls(metered) == before + 2
    assert jwt_claims(vault.token)["aud"] == "https://vault.azure.net"
    assert jwt_claims(storage.token)["aud"] == "https://storage.azure.com"


def test_within_the_margin_the_gateway_is_asked_again(metered, credential_of):
    clock = Clock()
    credential = credential_of(socket_path=str(metered.socket), _clock=clock)
    before = gateway_calls(metered)
    token = credential.get_token("https://vault.azure.net/.default")
    clock.now = token.expires_on - MARGIN - 1
    credential.get_token("https://vault.azure.net/.default")
    assert gateway_calls(metered) == before + 1, "more than the margin left: still from memory"
    clock.now = token.expires_on - MARGIN + 1
    credential.get_token("https://vault.azure.net/.default")
    assert gateway_calls(metered) == before + 2
    credential.get_token("https://vault.azure.net/.default")
    assert gateway_calls(metered) == before + 3, "the gateway's token is the same one, still within the margin"


def test_a_failing_gateway_call_falls_back_to_an_unexpired_token(gateway, credential_of):
    clock = Clock()
    flaky = FlakyClient(credential_of.connect(gateway.socket), is_async=credential_of.flavour == "aio")
    try:
        credential = credential_of(client=flaky, _clock=clock)
        token = credential.get_token("https://vault.azure.net/.default")
        flaky.down = True
        clock.now = token.expires_on - 10  # within the margin, not expired
        assert credential.get_token("https://vault.azure.net/.default") == token
        assert credential.get_token_info("https://vault.azure.net/.default").token == token.token
        clock.now = token.expires_on + 1
        with pytest.raises(identity_gateway.Unavailable):
            credential.get_token("https://vault.azure.net/.default")
        with pytest.raises(identity_gateway.Unavailable):
            credential.get_token("https://storage.azure.com/.default")  # nothing cached
        with pytest.raises(ValueError):
            credential.get_token("https://vault.azure.net/.default", claims='{"access_token":{}}')
        flaky.down = False
        clock.now = time.time()
        assert credential.get_token("https://vault.azure.net/.default").token
    finally:
        if credential_of.flavour == "aio":
            Synced(credential_of.runner, flaky.client).close()
        else:
            flaky.client.close()


def test_threads_share_one_credential(metered):
    scopes = [
        "https://vault.azure.net/.default",
        "https://storage.azure.com/.default",
        "https://management.azure.com//.default",
    ]
    start = threading.Barrier(24)
    results, errors = [], []

    def work(n):
        try:
            start.wait(timeout=30)
            for _ in range(20):
                results.append((n % 3, credential.get_token(scopes[n % 3])))
        except Exception as error:  # noqa: BLE001 -- collected and asserted below
            errors.append(error)

    with GatewayCredential(socket_path=str(metered.socket)) as credential:
        before = gateway_calls(metered)
        threads = [threading.Thread(target=work, args=(n,)) for n in range(24)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert not errors, errors
    assert len(results) == 24 * 20
    for n, token in results:
        assert jwt_claims(token.token)["aud"] == scopes[n].rsplit("/.default", 1)[0]
    assert gateway_calls(metered) - before <= 24, "at most one call per thread's first miss"


def test_no_token_in_the_credentials_repr(gateway, credential_of):
    credential = credential_of(socket_path=str(gateway.socket))
    token = credential.get_token("https://vault.azure.net/.default")
    target = getattr(credential, "_target", credential)
    assert token.token not in repr(target) and token.token not in repr(target._cache)
    assert "https://vault.azure.net" in repr(target._cache)


def test_both_credentials_take_the_same_arguments():
    for name in ("__init__", "get_token", "get_token_info"):
        sync = inspect.signature(getattr(GatewayCredential, name)).parameters
        aio = inspect.signature(getattr(AsyncGatewayCredential, name)).parameters
        assert [(p.name, p.kind, p.default) for p in sync.values()] == [
            (p.name, p.kind, p.default) for p in aio.values()
        ]
