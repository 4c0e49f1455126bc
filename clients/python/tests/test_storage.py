"""GetResourceGroup, GetServiceSas and ReadBlob through the Python client.
Blobs live in a real Azurite (HTTPS, bearer tokens checked) behind a gateway
that trusts Azurite's CA through its config file."""

from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs

import pytest
import requests

import identity_gateway
from azurite import Azurite
from conftest import RESOURCE_GROUP, STORAGE_ACCOUNT, SUBSCRIPTION_ID, USER_CLIENT_ID
from gateway_process import GatewayProcess

X_MS_VERSION = "2025-11-05"
CONTENT = b"vehicle,speed\n1,54\n2,57\n" * 100


@pytest.mark.rpc("GetResourceGroup")
def test_get_resource_group(client):
    group = client.get_resource_group(SUBSCRIPTION_ID, RESOURCE_GROUP)
    assert group.name == RESOURCE_GROUP
    assert group.id == f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{RESOURCE_GROUP}"
    assert group.location == "eastus"
    assert group.tags == {"env": "emulator", "owner": "identity-gateway"}


@pytest.mark.rpc("GetResourceGroup")
def test_a_missing_resource_group_is_not_found(client):
    with pytest.raises(identity_gateway.NotFound):
        client.get_resource_group(SUBSCRIPTION_ID, "no-such-group")


@pytest.mark.rpc("GetServiceSas")
def test_arm_service_sas(client):
    sas = client.get_service_sas(
        STORAGE_ACCOUNT,
        "samples",
        "hello.txt",
        permissions="wr",
        expires_in=timedelta(minutes=30),
        method="arm",
        subscription_id=SUBSCRIPTION_ID,
        resource_group=RESOURCE_GROUP,
    )
    fields = parse_qs(sas.sas_token)
    assert fields["sp"] == ["rw"], "canonical order"
    assert fields["sr"] == ["b"]
    assert "sig" in fields
    assert sas.signed_resource == "b" and sas.signed_permissions == "rw"
    now = datetime.now(timezone.utc)
    assert now + timedelta(minutes=25) < sas.expires_on <= now + timedelta(minutes=31)
    assert sas.sas_token not in repr(sas)


@pytest.mark.rpc("GetServiceSas")
def test_arm_sas_with_a_reader_identity_is_permission_denied(client):
    with pytest.raises(identity_gateway.PermissionDenied):
        client.get_service_sas(
            STORAGE_ACCOUNT,
            "samples",
            method="arm",
            permissions="r",
            subscription_id=SUBSCRIPTION_ID,
            resource_group=RESOURCE_GROUP,
            identity={"client_id": USER_CLIENT_ID},
        )


@pytest.mark.rpc("ReadBlob")
def test_read_blob_refuses_hosts_outside_storage(client):
    with pytest.raises(identity_gateway.InvalidArgument):
        client.read_blob_bytes("https://evil.example/c/b.txt")


# ------------------------------------------------------------ against Azurite


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    server = Azurite(tmp_path_factory.mktemp("azurite"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def storage_gateway(tmp_path_factory, azurite):
    """A gateway that also trusts Azurite's CA (the emulator adds its own)."""
    workdir = tmp_path_factory.mktemp("storage-gateway")
    config = workdir / "gateway.toml"
    config.write_text(f'[upstream]\nca_files = ["{azurite.ca}"]\n')
    process = GatewayProcess(workdir, extra_args=["--config", str(config)]).start()
    with identity_gateway.connect(str(process.socket)) as client:
        yield client
    assert process.stop() == 0, process.stderr()


@pytest.fixture(scope="module")
def blob_url(storage_gateway, azurite):
    """Uploads a blob the way any app on the VM would: with a Storage token from the gateway."""
    token = storage_gateway.get_token("https://storage.azure.com/").access_token
    session = requests.Session()
    session.trust_env = False
    headers = {"Authorization": f"Bearer {token}", "x-ms-version": X_MS_VERSION}
    created = session.put(f"{azurite.endpoint}/samples?restype=container", headers=headers,
                          verify=str(azurite.ca), timeout=30)
    assert created.status_code in (201, 409), created.text
    url = f"{azurite.endpoint}/samples/vehicles.csv"
    uploaded = session.put(url, data=CONTENT, verify=str(azurite.ca), timeout=30,
                           headers={**headers, "x-ms-blob-type": "BlockBlob", "Content-Type": "text/csv"})
    assert uploaded.status_code == 201, uploaded.text
    return url


@pytest.mark.rpc("ReadBlob")
def test_read_blob(storage_gateway, blob_url):
    with storage_gateway.read_blob(blob_url) as stream:
        assert stream.properties.size == len(CONTENT)
        assert stream.properties.content_type == "text/csv"
        assert stream.properties.etag
        chunks = list(stream)
    assert b"".join(chunks) == CONTENT
    assert storage_gateway.read_blob_bytes(blob_url, offset=9, length=5) == CONTENT[9:14]


@pytest.mark.rpc("ReadBlob")
def test_a_missing_blob_is_not_found(storage_gateway, azurite, blob_url):
    with pytest.raises(identity_gateway.NotFound):
        storage_gateway.read_blob_bytes(f"{azurite.endpoint}/samples/no-such.csv")


@pytest.mark.rpc("GetServiceSas")
def test_a_user_delegation_sas_reads_the_blob_without_a_token(storage_gateway, azurite, blob_url):
    sas = storage_gateway.get_service_sas(
        STORAGE_ACCOUNT, "samples", "vehicles.csv", permissions="r",
        expires_in=600, blob_endpoint=azurite.endpoint,
    )
    assert sas.url.startswith(blob_url + "?")
    session = requests.Session()
    session.trust_env = False
    response = session.get(sas.url, verify=str(azurite.ca), timeout=30)
    assert response.status_code == 200, response.text
    assert response.content == CONTENT
    denied = session.put(sas.url, data=b"x", headers={"x-ms-blob-type": "BlockBlob"},
                         verify=str(azurite.ca), timeout=30)
    assert denied.status_code == 403
