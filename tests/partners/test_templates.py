"""Biz templates are data checked on registration (O1): every error names its step;
versions are kept; YAML and JSON both work; a template never executes anything."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from bossa.access import Role
from bossa.errors import Conflict, InvalidInput, NotFound
from bossa.partners import (
    PartnerRequest,
    TemplateRequest,
    check_template,
    register_template,
    set_partner,
)
from bossa.partners.models import check_input
from bossa.runtime import Runtime
from tests.partners.conftest import CHECK, NOTIFY
from tests.support import api_client


def _steps(*steps: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "inputs": {"s": {"type": "string"}, "n": {"type": "integer"}},
        "steps": list(steps),
        **more,
    }


def _error(data: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        check_template(data)
    return caught.value


def test_the_starter_templates_pass() -> None:
    checked = check_template(yaml.safe_load(NOTIFY))
    assert [s.object for s in checked.steps] == [
        "subscriber.status",
        "compare",
        "branch",
        "sms.send",
    ]
    check_template(yaml.safe_load(CHECK))


def test_unknown_object_names_the_step() -> None:
    error = _error(_steps({"id": "go", "object": "fax.send", "with": {}}))
    assert error.field == "steps.go.object"
    assert "unknown object 'fax.send'" in str(error)


def test_type_mismatch_names_the_step_and_input() -> None:
    error = _error(
        _steps(
            {"id": "st", "object": "subscriber.status", "with": {"subscriber": "$input.n"}},
        )
    )
    assert error.field == "steps.st.with.subscriber"
    assert "subscriber is string, given integer" in str(error)
    error = _error(
        _steps(
            {"id": "st", "object": "subscriber.status", "with": {"subscriber": "$input.s"}},
            {
                "id": "cmp",
                "object": "compare",
                "with": {"left": "$steps.st.contracts", "op": "eq", "right": "active"},
            },
        )
    )
    assert error.field == "steps.cmp.with.right"
    assert "integer with string" in str(error)
    error = _error(
        _steps(
            {
                "id": "cmp",
                "object": "compare",
                "with": {"left": "$input.s", "op": "lt", "right": "x"},
            }
        )
    )
    assert error.field == "steps.cmp.with.op"


def test_unreachable_step_names_the_step() -> None:
    error = _error(
        _steps(
            {"id": "a", "object": "compare", "with": {"left": 1, "op": "eq", "right": 1}},
            {
                "id": "b",
                "object": "compare",
                "with": {"left": 1, "op": "eq", "right": 2},
                "next": "end",
            },
            {"id": "orphan", "object": "compare", "with": {"left": 1, "op": "eq", "right": 3}},
        )
    )
    assert error.field == "steps.orphan"
    assert "unreachable" in str(error)


def test_a_value_from_a_step_that_may_not_have_run_is_refused() -> None:
    error = _error(
        _steps(
            {"id": "c", "object": "compare", "with": {"left": "$input.n", "op": "gt", "right": 0}},
            {
                "id": "br",
                "object": "branch",
                "with": {"condition": "$steps.c.result"},
                "then": "st",
                "else": "after",
            },
            {"id": "st", "object": "subscriber.status", "with": {"subscriber": "$input.s"}},
            {
                "id": "after",
                "object": "compare",
                "with": {"left": "$steps.st.status", "op": "eq", "right": "active"},
            },
        )
    )
    assert error.field == "steps.after.with.left"
    assert "has not surely run" in str(error)


def test_jumps_go_forward_only_and_to_known_steps() -> None:
    back = _error(
        _steps(
            {"id": "a", "object": "compare", "with": {"left": 1, "op": "eq", "right": 1}},
            {
                "id": "b",
                "object": "compare",
                "with": {"left": 1, "op": "eq", "right": 1},
                "next": "a",
            },
        )
    )
    assert back.field == "steps.b.next"
    nowhere = _error(
        _steps(
            {"id": "a", "object": "compare", "with": {"left": 1, "op": "eq", "right": 1}},
            {
                "id": "br",
                "object": "branch",
                "with": {"condition": "$steps.a.result"},
                "then": "zz",
                "else": "end",
            },
        )
    )
    assert nowhere.field == "steps.br.then"


def test_shape_errors_name_the_step() -> None:
    error = _error(_steps({"id": "a", "object": "compare", "with": {"left": 1}, "colour": "red"}))
    assert error.field.startswith("steps.a")
    missing = _error(_steps({"id": "a", "object": "compare", "with": {"left": 1, "op": "eq"}}))
    assert missing.field == "steps.a.with.right"
    assert _error({"inputs": {}, "steps": []}).field == "steps"
    assert _error("just text").field == "definition"


def test_run_input_is_checked_field_by_field() -> None:
    checked = check_template(yaml.safe_load(CHECK))
    assert check_input(checked, {"subscriber": "c1", "amount": 5}) == {
        "subscriber": "c1",
        "amount": 5,
    }
    cases = [
        ({"subscriber": "c1"}, "input.amount", "missing"),
        ({"subscriber": "c1", "amount": "5"}, "input.amount", "integer"),
        ({"subscriber": "c1", "amount": True}, "input.amount", "integer"),
        ({"subscriber": "c1", "amount": 0}, "input.amount", "between"),
        ({"subscriber": 7, "amount": 5}, "input.subscriber", "string"),
        ({"subscriber": "c1", "amount": 5, "extra": 1}, "input.extra", "no such input"),
    ]
    for data, field, reason in cases:
        with pytest.raises(InvalidInput) as caught:
            check_input(checked, data)
        assert caught.value.field == field, data
        assert reason in str(caught.value), data


async def test_registration_versions_and_owner(runtime: Runtime) -> None:
    pool = runtime.pool
    for name in ("acme", "globex"):
        await set_partner(pool, PartnerRequest(name=name, display_name=name), actor="t")
    first = await register_template(
        pool, TemplateRequest(name="check", partner="acme", definition=CHECK), actor="t"
    )
    again = await register_template(
        pool,
        TemplateRequest(name="check", partner="acme", definition=yaml.safe_load(CHECK)),
        actor="t",
    )
    assert (first.version, again.version) == (1, 2)
    assert first.definition == again.definition  # YAML text and data store the same
    with pytest.raises(Conflict):
        await register_template(
            pool, TemplateRequest(name="check", partner="globex", definition=CHECK), actor="t"
        )
    with pytest.raises(NotFound):
        await register_template(
            pool, TemplateRequest(name="other", partner="nobody", definition=CHECK), actor="t"
        )
    bad = "steps:\n  - {id: x, object: fax.send}\n"
    with pytest.raises(InvalidInput):
        await register_template(
            pool, TemplateRequest(name="bad", partner="acme", definition=bad), actor="t"
        )


async def test_api_registration_errors_name_the_step(runtime: Runtime) -> None:
    await set_partner(runtime.pool, PartnerRequest(name="acme", display_name="A"), actor="t")
    async with api_client(runtime) as http:
        answer = await http.post(
            "/partners/templates",
            json={
                "name": "broken",
                "partner": "acme",
                "definition": {
                    "steps": [
                        {
                            "id": "x",
                            "object": "compare",
                            "with": {"left": 1, "op": "eq", "right": "one"},
                        }
                    ]
                },
            },
        )
        assert answer.status_code == 422
        assert answer.json()["field"] == "steps.x.with.right"
        yaml_text = "!!python/object/apply:os.system ['true']"
        answer = await http.post(
            "/partners/templates",
            json={"name": "evil", "partner": "acme", "definition": yaml_text},
        )
        assert answer.status_code == 422
        assert answer.json()["field"] == "definition"
        ok = await http.post(
            "/partners/templates", json={"name": "check", "partner": "acme", "definition": CHECK}
        )
        assert ok.status_code == 201, ok.text
        assert ok.json()["version"] == 1
    async with api_client(runtime, role=Role.PARTNER) as http:
        refused = await http.post(
            "/partners/templates", json={"name": "mine", "partner": "acme", "definition": CHECK}
        )
        assert refused.status_code == 403
