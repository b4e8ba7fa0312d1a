"""The business-event file (S2-S4, S6, S7) and payload assembly (S3), without a database:
the default file is valid, every mistake is refused naming its field, the policy hook is
a registered name only, and internal events of one operation assemble as configured."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from bossa.errors import InvalidInput
from bossa.sync import InternalEvent
from bossa.sync.models import assemble, parse_event_config, policy
from bossa.sync.models import resolve_policy as resolve
from bossa.sync.service import MODULES, check_event_file, default_config, load_event_config

BASE: dict[str, Any] = {
    "notify": {
        "customers.account_opened": "publish",
        "customers.customer_created": "publish",
        "billing.payment_taken": "policy",
        "billing.note_added": "publish",
    },
    "business_events": {
        "AccountCreated": {
            "requires": ["customers.account_opened"],
            "collect": ["customers.customer_created"],
            "batch": True,
            "modules": ["account_data"],
        },
        "CustomerOnboarded": {
            "requires": ["customers.customer_created", "customers.account_opened"],
            "modules": ["account_data"],
        },
        "BalanceAdjusted": {"requires": ["billing.payment_taken"], "modules": ["balance_data"]},
        "RecycleRequest": {"requires": ["billing.note_added"], "modules": ["recycle"]},
    },
    "threads": {"RecycleRequest": 1},
}


def broken(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    *parents, last = path.split("/")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value
    return data


def test_the_default_file_is_valid_and_names_registered_modules_and_hook() -> None:
    events = default_config()
    events.check_modules(MODULES)
    assert resolve(events.policy_hook)("x") == "x"  # type: ignore[arg-type]
    assert events.threads == {"RecycleRequest": 1}
    assert set(events.business_events) >= {
        "AccountCreated",
        "AccountCancelled",
        "BalanceAdjusted",
        "BillingStarted",
        "BillingCompleted",
        "RecycleRequest",
    }


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("notify/customers.account_opened", "maybe", "notify.customers.account_opened"),
        ("notify/NotAName", "publish", "notify.NotAName"),
        ("business_events/AccountCreated/requires", [], "business_events.AccountCreated.requires"),
        (
            "business_events/AccountCreated/requires",
            ["customers.never_notified"],
            "business_events.AccountCreated",
        ),
        ("business_events/AccountCreated/batch", "often", "business_events.AccountCreated.batch"),
        (
            "business_events/lowercase",
            {"requires": ["billing.note_added"], "modules": ["x"]},
            "business_events.lowercase",
        ),
        ("threads/RecycleRequest", 2, "threads.RecycleRequest"),
        ("threads/Unknown", 1, "threads.Unknown"),
        ("threads/BalanceAdjusted", 0, "threads.BalanceAdjusted"),
        ("threads/AccountCreated", 2, "threads.AccountCreated"),
        ("queues", {"BalanceAdjusted": [9]}, "queues.BalanceAdjusted"),
        ("queues", {"BalanceAdjusted": "sometimes"}, "queues.BalanceAdjusted"),
        ("unknown_section", {}, "unknown_section"),
    ],
)
def test_each_mistake_is_refused_naming_its_field(path: str, value: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_event_config(broken(path, value))
    assert caught.value.field is not None
    assert caught.value.field.startswith(field), (caught.value.field, str(caught.value))


def test_recycle_requests_get_at_most_one_thread() -> None:
    with pytest.raises(InvalidInput, match="at most one thread") as caught:
        parse_event_config(broken("threads/RecycleRequest", 2))
    assert caught.value.field == "threads.RecycleRequest"


def test_a_module_or_hook_that_is_not_registered_is_refused(tmp_path: Path) -> None:
    bad = broken("business_events/BalanceAdjusted/modules", ["balance_data", "os.system"])
    with pytest.raises(InvalidInput) as caught:
        parse_event_config(bad).check_modules(MODULES)
    assert caught.value.field == "business_events.BalanceAdjusted.modules[1]"

    # A dotted path or code is not a hook: only registered names are.
    for name in ("os:system", "__import__('os').system('true')", "bossa.sync.models:policy"):
        file = tmp_path / "events.yaml"
        file.write_text(yaml.safe_dump({**BASE, "policy_hook": name}))
        with pytest.raises(InvalidInput) as caught:
            check_event_file(file)
        assert caught.value.field == "policy_hook"


def test_files_in_yaml_toml_and_json_and_unreadable_ones(tmp_path: Path) -> None:
    toml = tmp_path / "events.toml"
    toml.write_text(
        '[notify]\n"sync.recycle_requested" = "publish"\n'
        '[business_events.RecycleRequest]\nrequires = ["sync.recycle_requested"]\n'
        'modules = ["recycle"]\n[threads]\nRecycleRequest = 1\n'
    )
    assert load_event_config(toml).threads == {"RecycleRequest": 1}
    yml = tmp_path / "events.yml"
    yml.write_text("notify: [unclosed\n")
    with pytest.raises(InvalidInput) as caught:
        load_event_config(yml)
    assert caught.value.field == "BOSSA_SYNC_EVENTS"
    with pytest.raises(InvalidInput):
        load_event_config(tmp_path / "missing.yaml")
    other = tmp_path / "events.ini"
    other.write_text("x")
    with pytest.raises(InvalidInput, match="must end in"):
        load_event_config(other)


def test_assembly_collects_one_operations_events_per_customer() -> None:
    events = parse_event_config(BASE)
    at = datetime(2026, 11, 29, tzinfo=UTC)
    raised = [
        InternalEvent(name="customers.customer_created", customer_id="C-1", data={"name": "x"}),
        InternalEvent(name="customers.account_opened", customer_id="C-1", data={"account": "A-1"}),
        InternalEvent(name="customers.account_opened", customer_id="C-2", data={"account": "A-2"}),
        InternalEvent(name="billing.unlisted", customer_id="C-2"),
    ]
    built = assemble(events, raised, now=at)
    summary = [(b.type, b.customer_id, [e.name for e in b.events]) for b in built]
    assert summary == [
        (
            "AccountCreated",
            "C-1",
            ["customers.customer_created", "customers.account_opened"],
        ),
        (
            "CustomerOnboarded",
            "C-1",
            ["customers.customer_created", "customers.account_opened"],
        ),
        # C-2's operation raised no customer_created: only AccountCreated is complete.
        ("AccountCreated", "C-2", ["customers.account_opened"]),
    ]
    assert built[0].value("account") == "A-1"
    assert built[0].occurred_at == at
    # Nothing complete: nothing published.
    assert assemble(events, [InternalEvent(name="customers.customer_created")]) == []


def test_a_registered_hook_is_found_by_name_and_names_are_unique() -> None:
    @policy("test_upper_reason")
    def upper(event: InternalEvent) -> InternalEvent | None:
        return event

    assert resolve("test_upper_reason") is upper
    with pytest.raises(ValueError, match="registered already"):
        policy("test_upper_reason")(lambda e: e)


def test_a_bad_file_stops_the_start_naming_the_field(tmp_path: Path) -> None:
    from bossa.config import ConfigError, load
    from bossa.sync import SyncSettings

    file = tmp_path / "events.yaml"
    file.write_text(yaml.safe_dump({**BASE, "policy_hook": "no_such_hook"}))
    with pytest.raises(ConfigError, match="policy_hook") as caught:
        load(SyncSettings, events=file)
    assert "events" in str(caught.value)
    file.write_text(yaml.safe_dump(BASE))
    assert load(SyncSettings, events=file).events == file
