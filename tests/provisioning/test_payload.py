"""The payload of a provisioning command has one definition, `ProvisioningCommand`: it
names its plan version and carries bind data only (never command text); the SQL views
over the journal are the only SQL that knows its fields, and these tests fail when a
view and the model disagree (a field renamed in one and not the other)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import psycopg
import pytest

from bossa.errors import InvalidInput
from bossa.provisioning.models import (
    COMMAND_KIND,
    BufferRow,
    PlanKey,
    ProvisioningCommand,
    ServerType,
)
from bossa.provisioning.store import QUERIES

SEED_VIEWS = ("sql_plan_buffer", "mmdb_plan_buffer", "backup_mode_buffer")
# `payload ->> 'wo_no'::text AS wo_no`, `(payload ->> 'ins_date'::text)::timestamp ... AS ins_date`
_PAYLOAD_COLUMN = re.compile(r"payload\s*->>?\s*'(\w+)'(?:::text)?\)?(?:::[\w ]+)?\s+AS\s+(\w+)")


def command(**changes: Any) -> ProvisioningCommand:
    values: dict[str, Any] = {
        "sa_id": "SA-1",
        "division": "AAA",
        "server_type": ServerType.SQL,
        "product": "ADSL",
        "intf_code": "4201",
        "plan_version": 3,
        "wo_no": "WO-1",
        "cust_id": "C-1",
        "bind_data": {"speed": "100M"},
        "ins_date": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    }
    return ProvisioningCommand(**{**values, **changes})


PAYLOAD_FIELDS = set(command().to_payload())


def viewdef(conn: psycopg.Connection[Any], view: str) -> str:
    row = conn.execute(
        "select pg_get_viewdef(%s::regclass, true)", (f"provisioning.{view}",)
    ).fetchone()
    assert row is not None
    return str(row[0])


def view_columns(conn: psycopg.Connection[Any], view: str) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "select column_name from information_schema.columns"
            " where table_schema = 'provisioning' and table_name = %s order by ordinal_position",
            (view,),
        )
    ]


def test_the_payload_round_trips_and_keeps_the_key_out() -> None:
    original = command()
    payload = original.to_payload()
    assert "sa_id" not in payload  # the entry's key
    again = ProvisioningCommand.from_entry({"key": "SA-1", "payload": payload})
    assert again == original
    assert again.binds() == {
        "sa_id": "SA-1",
        "cust_id": "C-1",
        "wo_no": "WO-1",
        "intf_code": "4201",
        "speed": "100M",
    }


def test_the_payload_names_its_plan_version_and_carries_no_command() -> None:
    payload = command().to_payload()
    assert "command" not in payload
    assert "bind_method" not in payload  # the plan version's, not the payload's
    assert command().plan_key == PlanKey("ADSL", "4201", "AAA", 3)


def test_a_payload_with_command_text_is_refused() -> None:
    # The shape from before plans were versioned: the migration turned each one whose
    # text matched a plan into a plan version's name; one that matched none is refused.
    payload = {**command().to_payload(), "command": "drop table subscribers"}
    with pytest.raises(InvalidInput) as caught:
        ProvisioningCommand.from_entry({"key": "SA-1", "payload": payload})
    assert caught.value.field == "payload.command"
    assert "never sent" in str(caught.value)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"division": "AAA"}, "payload.server_type"),
        ({**command().to_payload(), "colour": "red"}, "payload.colour"),
        ({**command().to_payload(), "server_type": "fax"}, "payload.server_type"),
        ({**command().to_payload(), "plan_version": 0}, "payload.plan_version"),
        ({**command().to_payload(), "bind_data": {"x": {"a": 1}}}, "payload.bind_data"),
        ({**command().to_payload(), "bind_data": {"x": "a\x00b"}}, "payload.bind_data"),
        ({**command().to_payload(), "division": "aaa; drop"}, "payload.division"),
        ("not an object", "payload"),
    ],
)
def test_a_payload_the_model_refuses_names_the_field(payload: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        ProvisioningCommand.from_entry({"key": "SA-1", "payload": payload})
    assert caught.value.field == field


def test_operators_change_bind_values_only() -> None:
    changed = command().with_binds({"speed": "1G"})
    assert changed.bind_data == {"speed": "1G"}
    assert changed.plan_key == command().plan_key  # the command sent stays the plan's
    with pytest.raises(InvalidInput) as unknown:
        command().with_binds({"colour": "red"})
    assert unknown.value.field == "bind_data.colour"
    with pytest.raises(InvalidInput) as nested:
        command().with_binds({"speed": {"drop": "table"}})
    assert nested.value.field == "bind_data.speed"


def test_the_commands_view_reads_exactly_the_payload_fields(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        definition = viewdef(conn, "commands")
        columns = view_columns(conn, "commands")
    read = _PAYLOAD_COLUMN.findall(definition)
    assert {key for key, _ in read} == PAYLOAD_FIELDS, "the view and ProvisioningCommand differ"
    assert [key for key, column in read if key != column] == [], "a payload field renamed"
    assert set(columns) >= PAYLOAD_FIELDS
    assert len(read) == definition.count("payload"), "a payload read the pattern missed"
    assert "key AS sa_id" in definition  # the model's sa_id is the entry's key
    assert f"kind = '{COMMAND_KIND}'" in definition
    assert "journal.lane_entries" in definition  # the journal's published view, not its table
    # The command shown is the plan version's, joined on the version the payload names.
    assert "provisioning.plan_versions" in definition
    assert {"command", "bind_method"} <= set(columns)
    for joined in (
        "v.product_code = c.product",
        "v.intf_code = c.intf_code",
        "v.division = c.division",
        "v.version = c.plan_version",
    ):
        assert joined in definition


@pytest.mark.parametrize("view", SEED_VIEWS)
def test_the_seed_buffers_take_payload_fields_from_the_commands_view(
    db_url: str, view: str
) -> None:
    with psycopg.connect(db_url) as conn:
        definition = viewdef(conn, view)
        columns = set(view_columns(conn, view))
        used = {
            r[0]
            for r in conn.execute(
                "select column_name from information_schema.view_column_usage"
                " where view_schema = 'provisioning' and view_name = %s"
                " and table_schema = 'provisioning' and table_name = 'commands'",
                (view,),
            )
        }
    assert "payload" not in definition
    # The payload fields it shows are read under their names; the only other one it
    # reads is the server type that picks its buffer.
    assert columns & PAYLOAD_FIELDS <= used
    assert (used & PAYLOAD_FIELDS) - columns <= {"server_type"}
    assert columns & PAYLOAD_FIELDS, "a buffer view without the payload's columns"


def test_the_buffer_query_and_its_row_model_agree_with_the_payload(db_url: str) -> None:
    text = QUERIES["buffer"]
    assert "payload" not in text
    assert "from provisioning.commands" in text
    with psycopg.connect(db_url) as conn:
        cursor = conn.execute(
            text,
            {
                "lane": "provisioning.AAA",
                "state": None,
                "older_than_s": None,
                "errcode": None,
                "sa_id": None,
                "limit": 1,
            },
        )
        assert cursor.description is not None
        columns = [c.name for c in cursor.description]
    assert columns == list(BufferRow.model_fields)
    assert set(columns) & PAYLOAD_FIELDS, "the buffer shows none of the payload's fields"


def test_no_other_provisioning_sql_reads_a_payload() -> None:
    sql = resources.files("bossa.provisioning").joinpath("sql")
    queries = sql.joinpath("queries.sql").read_text()
    assert "payload" not in queries
    schema = sql.joinpath("schema.sql").read_text()
    view = schema[schema.index("create view provisioning.commands") :]
    view = view[: view.index(";")]
    assert schema.count("payload ->") == view.count("payload ->")
    assert "journal.entries" not in schema + queries
