"""The API's shared rules, replayed as an attacker would: no credential, huge bodies, deep
JSON, garbage in every field; each refused with a 4xx in the documented shape."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bossa.access import Role, create_token
from bossa.access.models import TokenRequest
from bossa.api import create_app
from bossa.api.limits import json_depth
from bossa.api.settings import ApiSettings
from bossa.journal import Journal
from bossa.runtime import Runtime


@pytest.fixture
async def client(journal: Journal, db_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    app = create_app(settings=ApiSettings(max_body_bytes=4096, max_json_depth=8))
    runtime = Runtime.around(db_url, journal, embedded=False)
    app.state.runtime = runtime
    admin = await create_token(journal.pool, TokenRequest(name="root", role=Role.ADMIN), actor="t")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bossa") as http:
        yield http, admin.token
    await runtime.deliverer.close()


def _is_error_body(answer: httpx.Response) -> bool:
    body = answer.json()
    return set(body) == {"error", "field", "reason"}


async def test_health_is_public_and_says_nothing_more(
    client: tuple[httpx.AsyncClient, str],
) -> None:
    http, _ = client
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    assert (await http.get("/readyz")).json() == {"status": "ready"}


async def test_metrics_need_a_credential(client: tuple[httpx.AsyncClient, str]) -> None:
    http, token = client
    assert (await http.get("/metrics")).status_code == 401
    answer = await http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
    assert "bossa_access_denied_total" in answer.text


async def test_body_too_large_is_413_before_it_is_read(
    client: tuple[httpx.AsyncClient, str],
) -> None:
    http, token = client
    auth = {"Authorization": f"Bearer {token}"}
    answer = await http.post("/access/tokens", content=b"x" * 5000, headers=auth)
    assert answer.status_code == 413
    assert _is_error_body(answer)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(10):
            yield b"y" * 1000

    streamed = await http.post("/access/tokens", content=chunks(), headers=auth)
    assert streamed.status_code == 413


async def test_json_nested_too_deep_is_refused(client: tuple[httpx.AsyncClient, str]) -> None:
    http, token = client
    deep = "[" * 9 + "]" * 9
    answer = await http.post(
        "/access/tokens",
        content=deep,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert answer.status_code == 422
    assert answer.json()["field"] == "body"


async def test_validation_errors_name_the_field_in_bossas_shape(
    client: tuple[httpx.AsyncClient, str],
) -> None:
    http, token = client
    answer = await http.post(
        "/access/tokens",
        json={"name": "x", "role": "emperor"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 422
    assert _is_error_body(answer)
    assert answer.json()["field"] == "role"
    nul = await http.post(
        "/access/tokens",
        json={"name": "a\x00b", "role": "admin"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert nul.status_code == 422


async def test_openapi_documents_bossas_error_shape(client: tuple[httpx.AsyncClient, str]) -> None:
    http, _ = client
    schema = (await http.get("/openapi.json")).json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    create = schema["paths"]["/access/tokens"]["post"]["responses"]
    for status in ("401", "403", "413", "422", "503"):
        ref = create[status]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorBody")


def test_json_depth_ignores_brackets_inside_strings() -> None:
    assert json_depth(b'{"a": "[[[[[[", "b": [1, {"c": "\\"]"}]}') == 3
    assert json_depth(b"42") == 0
