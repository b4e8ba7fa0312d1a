"""The kinds' descriptions against the schema: every relation import names is one its
owner publishes (the rule tests/foundation/test_shape.py holds queries.sql to), each
owner's import function takes one array per column in the kind's order and the actor,
and each export view has the kind's columns."""

from __future__ import annotations

from typing import Any

import pytest

from bossa.db import Pool
from bossa.imports import KINDS, Kind
from bossa.imports.models import ColumnType
from tests.foundation.test_shape import _published

_ARRAY = {ColumnType.TEXT: "text[]", ColumnType.INTEGER: "bigint[]", ColumnType.DATE: "date[]"}


def _relations(kind: Kind) -> set[str]:
    names = {str(kind.existing), str(kind.apply), str(kind.export)}
    names |= {str(r.relation) for r in kind.references}
    names |= {str(s.relation) for s in kind.same_values}
    return names


@pytest.mark.parametrize("kind", KINDS.values(), ids=lambda k: k.name.value)
def test_every_relation_named_is_published(kind: Kind) -> None:
    published = set().union(*(_published(m) for m in ("customers", "ledger")))
    assert _relations(kind) - published == set()


async def _rows(pool: Pool, query: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        return await (await conn.execute(query, params)).fetchall()  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", KINDS.values(), ids=lambda k: k.name.value)
async def test_functions_and_views_match_the_description(pool: Pool, kind: Kind) -> None:
    found = await _rows(
        pool,
        "select pg_get_function_identity_arguments(p.oid) as args from pg_proc p"
        " join pg_namespace n on n.oid = p.pronamespace where n.nspname = %s and p.proname = %s",
        (kind.apply.schema, kind.apply.name),
    )
    expected = ", ".join([f"p_{c.name} {_ARRAY[c.type]}" for c in kind.columns] + ["p_actor text"])
    assert [row["args"] for row in found] == [expected]
    columns = await _rows(
        pool,
        "select column_name from information_schema.columns"
        " where table_schema = %s and table_name = %s order by ordinal_position",
        (kind.export.schema, kind.export.name),
    )
    assert [c["column_name"] for c in columns] == list(kind.names)
