"""Python values <-> protobuf, without a gateway."""

import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest

from identity_gateway import _convert as convert
from identity_gateway._proto import gateway_pb2 as pb


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        -(2**63),
        2**63 - 1,
        1.5,
        Decimal("12.3400"),
        "héllo",
        b"\x00\xff",
        uuid.UUID("6f9619ff-8b86-d011-b42d-00c04fc964ff"),
        datetime(2024, 5, 1, 12, 30, 0, 125000, tzinfo=timezone.utc),
        date(2021, 3, 14),
        time(8, 0, 1, 500),
    ],
)
def test_parameters_round_trip(value):
    assert convert.sql_value(convert.sql_parameter(value, 1)) == value


def test_parameter_kinds_are_the_sql_ones():
    assert convert.sql_parameter(True, 1).WhichOneof("kind") == "bool"
    assert convert.sql_parameter(1, 1).WhichOneof("kind") == "int"
    assert convert.sql_parameter(Decimal("1E+2"), 1).decimal == "100"
    assert convert.sql_parameter(uuid.UUID(int=1), 1).guid == "00000000-0000-0000-0000-000000000001"
    naive = convert.sql_parameter(datetime(2024, 1, 1, 0, 0), 1)
    assert naive.timestamp.seconds == int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp())


def test_bad_parameters_name_their_position():
    with pytest.raises(ValueError, match="@P2"):
        convert.sql_parameters([1, 2**63])
    with pytest.raises(TypeError, match="@P1"):
        convert.sql_parameter(object(), 1)
    with pytest.raises(ValueError, match="@P3"):
        convert.sql_parameter(Decimal("NaN"), 3)


def test_result_values_become_python_types():
    assert convert.sql_value(pb.SqlValue(time="23:59:59.1234567")) == time(23, 59, 59, 123456)
    assert convert.sql_value(pb.SqlValue(time="00:00:00")) == time(0, 0)
    assert convert.sql_value(pb.SqlValue(decimal="19.99")) == Decimal("19.99")
    assert convert.sql_value(pb.SqlValue()) is None


def test_row_keys_handle_unnamed_and_repeated_columns():
    cols = [convert.SqlColumn(n, "int", False) for n in ("id", "", "id")]
    assert convert.row_keys(cols) == ["id", "column2", "column3"]


def test_scopes_become_resources():
    assert convert.scope_to_resource(["https://vault.azure.net/.default"]) == "https://vault.azure.net"
    assert convert.scope_to_resource(["https://management.azure.com//.default"]) == "https://management.azure.com/"
    assert convert.scope_to_resource(["api://my-app"]) == "api://my-app"
    with pytest.raises(ValueError):
        convert.scope_to_resource(["a/.default", "b/.default"])


def test_targets():
    assert convert.resolve_target("/tmp/x.sock") == "unix:/tmp/x.sock"
    assert convert.resolve_target(target="127.0.0.1:7777") == "127.0.0.1:7777"
    with pytest.raises(ValueError):
        convert.resolve_target("/a", "b")


def test_enums_accept_readable_names():
    assert convert.enum_value(convert.CLOUDS, "us-government", "cloud") == pb.CLOUD_AZURE_US_GOVERNMENT
    assert convert.enum_value(convert.GENERATIONS, "gen2", "generation") == pb.DATA_LAKE_GENERATION_GEN2
    assert convert.enum_value(convert.SAS_METHODS, "arm", "method") == pb.SAS_METHOD_ARM_LIST_SERVICE_SAS
    with pytest.raises(ValueError, match="cloud"):
        convert.enum_value(convert.CLOUDS, "mars", "cloud")


def test_durations_and_timestamps():
    assert convert.to_duration(90).seconds == 90
    assert convert.to_duration(timedelta(hours=1)).seconds == 3600
    ts = convert.to_timestamp(datetime(2024, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))))
    assert ts.seconds == int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp())


def test_unix_channels_keep_grpc_cores_default_authority():
    assert convert.channel_options("unix:/tmp/x.sock", None) == []
    assert convert.channel_options("127.0.0.1:7777", None) == []
    mine = [("grpc.default_authority", "gw")]
    assert convert.channel_options("unix:/x", mine) == mine
