"""QuerySql through the Python client: typed rows, parameters, errors."""

import uuid
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

import identity_gateway

pytestmark = pytest.mark.rpc("QuerySql")
DATABASE = "appdb"


@pytest.fixture
def server(_skip_unimplemented_rpcs, emulator):
    value = emulator.fake_url("SQL server", "sql")
    return value.split("://", 1)[-1]


def test_rows_come_back_with_python_types(client, server):
    query = client.query_sql(server, DATABASE, "SELECT * FROM dbo.products ORDER BY id")
    rows = query.fetchall()
    assert [r["id"] for r in rows] == [1, 2, 3]
    widget = rows[0]
    assert widget["name"] == "Widget"
    assert widget["price"] == Decimal("19.99")
    assert widget["in_stock"] is True
    assert widget["weight_kg"] == 0.25
    assert widget["sku"] == uuid.UUID("6F9619FF-8B86-D011-B42D-00C04FC964FF")
    assert widget["released"] == date(2021, 3, 14)
    assert widget["updated_at"] == datetime(2024, 5, 1, 12, 30, 0, 125000, tzinfo=timezone.utc)
    assert widget["thumbnail"] == b"\x89PNG"
    assert rows[2]["price"] is None and rows[2]["sku"] is None
    assert [c.name for c in query.columns][:3] == ["id", "name", "price"]
    assert query.summary is not None and query.summary.rows_per_result_set == (3,)
    assert not query.summary.truncated


def test_parameters_are_bound(client, server):
    rows = client.query_sql(
        server,
        DATABASE,
        "SELECT name FROM dbo.products WHERE price > @P1 AND name <> @P2",
        [Decimal("20"), "nobody'; DROP TABLE dbo.products; --"],
        row_type=tuple,
    ).fetchall()
    assert rows == [("Gadget",)]


def test_a_query_closed_early_has_no_summary(client, server):
    query = client.query_sql(server, DATABASE, "SELECT id FROM dbo.products ORDER BY id")
    assert next(iter(query)) == {"id": 1}
    assert query.result_set == 0 and [c.name for c in query.columns] == ["id"]
    query.close()
    assert query.summary is None
    assert client.query_sql(server, DATABASE, "SELECT id FROM dbo.products ORDER BY id", row_type=tuple).fetchall() == [
        (1,),
        (2,),
        (3,),
    ]


def test_max_rows_truncates(client, server):
    query = client.query_sql(server, DATABASE, "SELECT id FROM dbo.products", max_rows=2)
    assert len(query.fetchall()) == 2
    assert query.summary.truncated


def test_a_forbidden_table_is_permission_denied(client, server):
    with pytest.raises(identity_gateway.PermissionDenied):
        client.query_sql(server, DATABASE, "SELECT * FROM dbo.salaries").fetchall()


def test_a_server_outside_azure_sql_gets_no_token(client):
    with pytest.raises(identity_gateway.InvalidArgument):
        client.query_sql("evil.example", DATABASE, "SELECT 1").fetchall()
