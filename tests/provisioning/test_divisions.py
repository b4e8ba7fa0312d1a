"""What a division may be given (issue 11, points 4, 5, 7): a SERVER_URL of a scheme its
adapter speaks, naming a host, with no password in it (credentials live in their own
masked field), and every setting within its documented range; and provisioning's own
settings bounded. Refused before anything is written, naming the field."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from pydantic import ValidationError

from bossa.customers import load_sample
from bossa.errors import Conflict, InvalidInput
from bossa.journal import Journal
from bossa.provisioning import ProvisioningSettings, service
from bossa.provisioning.adapters import adapter_for
from bossa.provisioning.models import (
    Division,
    ServerType,
    check_server_url,
    redact,
    split_url_password,
)
from tests.provisioning.conftest import PASSWORD

SQL, MEMSTORE, SOAP, REST = ServerType.SQL, ServerType.MEMSTORE, ServerType.SOAP, ServerType.REST

ACCEPTED = [
    (SQL, "postgresql://aaa@10.0.0.5:5432/aaa"),
    (SQL, "postgresql+psycopg://aaa@db.example.com/aaa?sslmode=require"),
    (SQL, "mysql+pymysql://aaa@10.0.0.5:3306/aaa?charset=utf8mb4"),
    (SQL, "mariadb+pymysql://aaa@[::1]:3306/aaa"),
    (MEMSTORE, "redis://10.0.0.6:6379/0"),
    (MEMSTORE, "rediss://cache.example.com:6380/1"),
    (SOAP, "http://10.0.0.7:8000/nrs?wsdl"),
    (REST, "https://api.example.com/v1"),
]

REFUSED = [
    (SQL, "", "is required"),
    (SQL, "   ", "is required"),
    (SQL, "sqlite:////var/lib/bossa/x.db", "scheme 'sqlite'"),
    (SQL, "sqlite://", "scheme 'sqlite'"),
    (SQL, "/etc/passwd", "no scheme"),
    (SQL, "file:///etc/passwd", "scheme 'file'"),
    (SQL, "postgresql+psycopg2://aaa@h/aaa", "scheme 'postgresql+psycopg2'"),
    (SQL, "mysql://aaa@h/aaa", "scheme 'mysql'"),
    (SQL, "postgresql://aaa:s3cr3t@h/aaa", "must not hold a password"),
    (SQL, "postgresql://aaa:@h/aaa", "must not hold a password"),
    (SQL, "postgresql://aaa@/aaa", "must name a host"),
    (SQL, "postgresql://aaa@/aaa?host=/var/run/postgresql", "must name a host"),
    (SQL, "postgresql://aaa@h/aaa?host=/tmp", "'host' is not allowed"),
    (SQL, "postgresql://aaa@h/aaa?require_auth=password", "'require_auth' is not allowed"),
    (SQL, "postgresql://aaa@h/aaa?passfile=/root/.pgpass", "'passfile' is not allowed"),
    (SQL, "postgresql://aaa@h/aaa?password=x", "'password' is not allowed"),
    (SQL, "postgresql://aaa@h:99999/aaa", "is not a URL"),
    (SQL, "postgresql://aaa@h/aa\x00a", "control characters"),
    (SQL, "redis://10.0.0.6:6379/0", "a sql division takes"),
    (MEMSTORE, "unix:///tmp/redis.sock", "scheme 'unix'"),
    (MEMSTORE, "redis://:s3cr3t@10.0.0.6:6379/0", "must not hold a password"),
    (MEMSTORE, "redis://10.0.0.6:6379/0?password=s3cr3t", "'password' is not allowed"),
    (SOAP, "ftp://10.0.0.7/x", "scheme 'ftp'"),
    (SOAP, "http://user:s3cr3t@10.0.0.7/x?wsdl", "must not hold a password"),
    (REST, "http://user@10.0.0.7/x", "must not hold a user"),
    (REST, "https://api.example.com/v1?api_key=abc", "looks like a secret"),
    (REST, "https:///v1", "must name a host"),
    (REST, "http://" + "a" * 2050, "at most 2048"),
]


@pytest.mark.parametrize(("server_type", "url"), ACCEPTED)
def test_urls_the_adapters_speak_are_accepted(server_type: ServerType, url: str) -> None:
    assert check_server_url(server_type, url) == url


@pytest.mark.parametrize(("server_type", "url", "reason"), REFUSED)
def test_other_urls_are_refused_saying_why(server_type: ServerType, url: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_server_url(server_type, url)
    assert caught.value.field == "server_url"
    assert reason in caught.value.reason
    assert "s3cr3t" not in caught.value.reason  # the URL's password is never quoted


def test_the_adapter_refuses_a_stored_url_it_cannot_use() -> None:
    # A row written before the checks existed (or by hand) is refused when used.
    for url in ("sqlite:////tmp/x.db", "postgresql://aaa@/aaa?host=/tmp", ""):
        with pytest.raises(ValueError, match="server_url"):
            adapter_for(Division("OLD", SQL, server_url=url))


def test_a_password_stored_in_an_old_url_is_taken_out() -> None:
    url, password = split_url_password(f"postgresql+psycopg://aaa:{PASSWORD}@h:5432/aaa")
    assert (url, password) == ("postgresql+psycopg://aaa@h:5432/aaa", PASSWORD)
    assert split_url_password("redis://:p%40ss@h:6379/0") == ("redis://h:6379/0", "p@ss")
    assert split_url_password("http://h/x") == ("http://h/x", None)


def test_redact_masks_credentials_as_given_and_url_quoted() -> None:
    text = f"refused {PASSWORD} and pw%2Fx and Bearer {PASSWORD}"
    assert redact(text, [PASSWORD, "pw/x"]) == "refused *** and *** and Bearer ***"


@pytest.fixture
async def world(journal: Journal, db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        load_sample(conn)
    await service.add_division(
        journal.pool,
        "AAA",
        {
            "server_type": "sql",
            "server_url": "postgresql+psycopg://aaa@127.0.0.1:9/aaa",
            "credentials": {"username": "aaa", "password": PASSWORD},
        },
        actor="t",
    )


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"server_type": "sql"}, "server_url"),
        ({"server_type": "sql", "server_url": ""}, "server_url"),
        ({"server_type": "sql", "server_url": "sqlite:////tmp/x"}, "server_url"),
        ({"server_type": "memstore", "server_url": "postgresql://a@h/a"}, "server_url"),
        ({"server_type": "sql", "server_url": "postgresql://a@h/a", "timeout_ms": 9}, "timeout_ms"),
        (
            {"server_type": "sql", "server_url": "postgresql://a@h/a", "server_port": 0},
            "server_port",
        ),
        (
            {"server_type": "sql", "server_url": "postgresql://a@h/a", "server_name": "x" * 201},
            "server_name",
        ),
        (
            {"server_type": "sql", "server_url": "postgresql://a@h/a", "server_ip": "1\x00"},
            "server_ip",
        ),
        (
            {"server_type": "sql", "server_url": "postgresql://a@h/a", "credentials": {"pin": "1"}},
            "credentials.pin",
        ),
        (
            {
                "server_type": "sql",
                "server_url": "postgresql://a@h/a",
                "credentials": {"password": ""},
            },
            "credentials.password",
        ),
    ],
)
async def test_a_division_is_refused_before_anything_is_written(
    journal: Journal, world: None, values: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await service.add_division(journal.pool, "NEW", values, actor="t")
    assert caught.value.field == field
    assert [d.division for d in await service.list_divisions(journal.pool)] == ["AAA"]


async def test_a_change_is_checked_against_the_type_it_leaves(
    journal: Journal, world: None
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await service.update_division(journal.pool, "AAA", {"server_url": ""}, actor="t")
    assert caught.value.field == "server_url"
    with pytest.raises(InvalidInput) as caught:
        await service.update_division(journal.pool, "AAA", {"server_type": "rest"}, actor="t")
    assert caught.value.field == "server_url"  # its postgresql:// URL is no REST URL
    changed = await service.update_division(
        journal.pool,
        "AAA",
        {"server_type": "rest", "server_url": "http://10.0.0.9/api"},
        actor="t",
    )
    assert changed.server_type is REST
    # Once a plan names it, its templates are written for its type: the type stays.
    await service.add_plan_command(
        journal.pool, "ADSL", "4201", "AAA", {"method": "POST", "path": "/s/{sa_id}"}, actor="t"
    )
    with pytest.raises(Conflict) as conflict:
        await service.update_division(
            journal.pool,
            "AAA",
            {"server_type": "sql", "server_url": "postgresql://a@h/a"},
            actor="t",
        )
    assert conflict.value.field == "server_type"


async def test_credentials_are_kept_by_name_and_shown_masked(journal: Journal, world: None) -> None:
    shown = await service.update_division(
        journal.pool, "AAA", {"credentials": {"token": "tok"}}, actor="t"
    )
    assert shown.credentials == {"password": "***", "token": "***", "username": "***"}
    record = await service.division_record(journal.pool, "AAA")
    assert record is not None
    assert record.division.credentials == {"username": "aaa", "password": PASSWORD, "token": "tok"}
    assert PASSWORD not in repr(record)


async def test_a_row_with_a_password_in_its_url_lists_without_it(
    journal: Journal, world: None
) -> None:
    # As a division added before issue 11 could be: the password inside SERVER_URL.
    async with journal.pool.connection() as conn:
        await conn.execute(
            "update provisioning.divisions set server_url = %s, credentials = '{}'"
            " where division = 'AAA'",
            (f"postgresql+psycopg://aaa:{PASSWORD}@127.0.0.1:9/aaa",),
        )
    [listed] = await service.list_divisions(journal.pool)
    assert listed.server_url == "postgresql+psycopg://aaa@127.0.0.1:9/aaa"
    assert listed.credentials == {"password": "***"}
    assert PASSWORD not in listed.model_dump_json()
    record = await service.division_record(journal.pool, "AAA")
    assert record is not None
    assert record.division.credentials["password"] == PASSWORD  # the adapter still finds it


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("down_hold_s", -1),
        ("down_hold_s", 3601),
        ("receipt_batch", 0),
        ("receipt_batch", 10_001),
        ("receipt_poll_s", 0),
        ("receipt_poll_s", 61),
        ("backup_batch", 0),
        ("backup_batch", 10_001),
        ("backup_concurrency", 0),
        ("backup_concurrency", 65),
        ("logname", ""),
        ("logname", "x" * 65),
        ("logname", "a b"),
    ],
)
def test_settings_out_of_range_are_refused_naming_them(name: str, value: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        ProvisioningSettings(**{name: value})
    assert caught.value.errors()[0]["loc"] == (name,)


def test_every_setting_has_bounds() -> None:
    for name, info in ProvisioningSettings.model_fields.items():
        bounded = [m for m in info.metadata if type(m).__name__ in {"Ge", "Gt", "Le", "Lt"}]
        patterned = any(getattr(m, "pattern", None) for m in info.metadata)
        assert patterned or len(bounded) == 2, f"{name} lacks a lower or an upper bound"
