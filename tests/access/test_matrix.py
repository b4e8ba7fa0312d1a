"""Every route declares a permission, and every role gets exactly what the matrix says.

Derived from `/openapi.json`, so a route added without a permission fails here. Each
operation is called with no credential (401), then with a token of every role: a role
without the permission gets 403; a role with it gets past access control (whatever the
route then says of the dummy request: 404, 409, 422...). Requests carry an empty JSON
object and placeholder path values, so nothing here changes state that matters.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bossa.access import ROLE_PERMISSIONS, Permission, Role, create_token
from bossa.access.api import PERMISSION_KEY
from bossa.access.models import TokenRequest
from bossa.api import create_app
from bossa.journal import Journal
from bossa.runtime import Runtime

PUBLIC = {("get", "/healthz"), ("get", "/readyz")}


@pytest.fixture
async def app_and_tokens(
    journal: Journal, db_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, Any], dict[Role, str]]]:
    app = create_app()
    runtime = Runtime.around(db_url, journal, embedded=False)
    app.state.runtime = runtime
    tokens = {
        role: (
            await create_token(journal.pool, TokenRequest(name=f"t-{role}", role=role), actor="t")
        ).token
        for role in Role
    }
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bossa") as http:
        schema = (await http.get("/openapi.json")).json()
        yield http, schema, tokens
    await runtime.deliverer.close()


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    ]


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


async def test_every_route_declares_a_known_permission(
    app_and_tokens: tuple[httpx.AsyncClient, dict[str, Any], dict[Role, str]],
) -> None:
    _, schema, _ = app_and_tokens
    missing = [
        f"{method.upper()} {path}"
        for method, path, operation in _operations(schema)
        if (method, path) not in PUBLIC and PERMISSION_KEY not in operation
    ]
    assert missing == []
    declared = {
        operation[PERMISSION_KEY]
        for _, _, operation in _operations(schema)
        if PERMISSION_KEY in operation
    }
    assert declared <= {p.value for p in Permission}


async def test_every_route_with_every_role(
    app_and_tokens: tuple[httpx.AsyncClient, dict[str, Any], dict[Role, str]],
) -> None:
    http, schema, tokens = app_and_tokens
    wrong: list[str] = []
    for method, path, operation in _operations(schema):
        if (method, path) in PUBLIC:
            continue
        # Revoking tokens by a placeholder name must not revoke the test's own tokens.
        url = _concrete(path)
        body = {"json": {}} if method in ("post", "put", "patch") else {}
        anonymous = await http.request(method, url, **body)
        if anonymous.status_code != 401:
            wrong.append(f"{method.upper()} {path} anonymous: {anonymous.status_code}")
        needed = Permission(operation[PERMISSION_KEY])
        for role, token in tokens.items():
            answer = await http.request(
                method, url, headers={"Authorization": f"Bearer {token}"}, **body
            )
            allowed = needed in ROLE_PERMISSIONS[role]
            refused = answer.status_code in (401, 403)
            if allowed == refused or answer.status_code >= 500:
                wrong.append(f"{method.upper()} {path} as {role}: {answer.status_code}")
    assert wrong == []
