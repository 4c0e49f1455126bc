"""GetResourceGroup, GetServiceSas and ReadBlob through the Python client,
against the emulator's ARM and Blob Storage fakes (which check the bearer
token's signature and audience, and verify SAS signatures)."""

from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs

import pytest
import requests

import identity_gateway
from conftest import RESOURCE_GROUP, STORAGE_ACCOUNT, SUBSCRIPTION_ID, USER_CLIENT_ID


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


# ------------------------------------------------------------ the emulator's Blob Storage

HELLO = b"hello from the identity-gateway emulator\n"


def sample_binary() -> bytes:
    """`sample-1mib.bin`: 1 MiB of a fixed xorshift32 sequence (emulator/src/blob.rs)."""
    state, out = 0x9E3779B9, bytearray(1024 * 1024)
    for i in range(len(out)):
        state ^= (state << 13) & 0xFFFFFFFF
        state ^= state >> 17
        state ^= (state << 5) & 0xFFFFFFFF
        out[i] = state >> 24
    return bytes(out)


@pytest.fixture
def blob_base(_skip_unimplemented_rpcs, emulator):
    return emulator.fake_url("Blob Storage", "blob")


@pytest.mark.rpc("ReadBlob")
def test_read_blob(client, blob_base):
    with client.read_blob(f"{blob_base}/data/hello.txt") as stream:
        assert stream.properties.size == len(HELLO)
        assert stream.properties.content_type.startswith("text/plain")
        assert stream.properties.etag
        assert stream.read() == HELLO
    assert client.read_blob_bytes(f"{blob_base}/data/hello.txt", offset=6, length=4) == HELLO[6:10]


@pytest.mark.rpc("ReadBlob")
def test_a_large_blob_streams_in_chunks(client, blob_base):
    with client.read_blob(f"{blob_base}/data/sample-1mib.bin") as stream:
        chunks = list(stream)
    assert len(chunks) > 1
    assert b"".join(chunks) == sample_binary()


@pytest.mark.rpc("ReadBlob")
def test_a_download_closed_early_leaves_the_client_usable(client, blob_base):
    with client.read_blob(f"{blob_base}/data/sample-1mib.bin") as stream:
        first = next(iter(stream))
    assert 0 < len(first) < 1024 * 1024
    assert first == sample_binary()[: len(first)]
    assert client.read_blob_bytes(f"{blob_base}/data/hello.txt") == HELLO


@pytest.mark.rpc("ReadBlob")
def test_a_missing_blob_is_not_found(client, blob_base):
    with pytest.raises(identity_gateway.NotFound):
        client.read_blob_bytes(f"{blob_base}/data/no-such.txt")


@pytest.mark.rpc("ReadBlob")
def test_an_identity_without_a_data_role_is_permission_denied(client, blob_base):
    with pytest.raises(identity_gateway.PermissionDenied):
        client.read_blob_bytes(f"{blob_base}/data/hello.txt", identity={"client_id": USER_CLIENT_ID})


@pytest.mark.rpc("GetServiceSas")
def test_a_user_delegation_sas_reads_the_blob_without_a_token(client, blob_base, emulator):
    sas = client.get_service_sas(
        STORAGE_ACCOUNT, "data", "hello.txt", permissions="r", expires_in=600, blob_endpoint=blob_base
    )
    assert sas.url.startswith(f"{blob_base}/data/hello.txt?")
    session = requests.Session()
    session.trust_env = False
    response = session.get(sas.url, verify=emulator.ca_file, timeout=30)
    assert response.status_code == 200, response.text
    assert response.content == HELLO
    denied = session.put(
        sas.url, data=b"x", headers={"x-ms-blob-type": "BlockBlob"}, verify=emulator.ca_file, timeout=30
    )
    assert denied.status_code == 403
