"""GetResourceGroup, GetServiceSas and ReadBlob through the Python client."""

from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs

import pytest

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
        permissions="rw",
        expires_in=timedelta(minutes=30),
        method="arm",
        subscription_id=SUBSCRIPTION_ID,
        resource_group=RESOURCE_GROUP,
    )
    fields = parse_qs(sas.sas_token)
    assert fields["sp"] == ["rw"]
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
def test_read_blob(client, emulator):
    blob_url = emulator.fake_url("sample blob", "sample blob", "blob")
    with client.read_blob(blob_url) as stream:
        assert stream.properties.size > 0
        content = stream.read()
    assert len(content) == stream.properties.size
    tail = client.read_blob_bytes(blob_url, offset=1, length=2)
    assert tail == content[1:3]


@pytest.mark.rpc("ReadBlob")
def test_read_blob_refuses_hosts_outside_storage(client):
    with pytest.raises(identity_gateway.InvalidArgument):
        client.read_blob_bytes("https://evil.example/c/b.txt")
