"""Fixtures of the partner tests: the stand-in legacy system, the SFTP server, a runtime
around the test's database, and a partner with a three-object template and a policy."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import date
from pathlib import Path

import pytest

from bossa.journal import Journal
from bossa.ledger import DEPOSIT, AccountRequest, open_account, post
from bossa.partners import (
    PartnerRequest,
    PartnersSettings,
    PolicyRequest,
    SystemRequest,
    TemplateRequest,
    add_policy,
    register_template,
    set_partner,
    set_system,
)
from bossa.partners.models import Limits, SystemKind
from bossa.runtime import Runtime
from tests.partners.servers import LegacyServer, SftpServer

#: The benchmark's template too: subscriber status, compare, branch, then an SMS.
NOTIFY = """
description: text an active subscriber
inputs:
  subscriber: {type: string, max_length: 64}
  msisdn: {type: string, max_length: 20}
  text: {type: string, max_length: 480}
steps:
  - id: status
    object: subscriber.status
    with: {subscriber: $input.subscriber}
  - id: active
    object: compare
    with: {left: $steps.status.status, op: eq, right: active}
  - id: decide
    object: branch
    with: {condition: $steps.active.result}
    then: sms
    else: end
  - id: sms
    object: sms.send
    with: {to: $input.msisdn, text: $input.text}
outputs:
  status: $steps.status.status
"""

#: No legacy system: status and compare only (for tests that need no SMS centre).
CHECK = """
inputs:
  subscriber: {type: string}
  amount: {type: integer, minimum: 1, maximum: 100000}
steps:
  - id: status
    object: subscriber.status
    with: {subscriber: $input.subscriber}
  - id: big
    object: compare
    with: {left: $input.amount, op: gt, right: 1000}
outputs:
  status: $steps.status.status
  big: $steps.big.result
"""


@pytest.fixture(scope="session")
def legacy() -> Iterator[LegacyServer]:
    server = LegacyServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sftp() -> Iterator[SftpServer]:
    server = SftpServer()
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def sftp_settings(spool: Path, server: SftpServer, **more: object) -> PartnersSettings:
    return PartnersSettings(
        spool_dir=spool,
        sftp_host="127.0.0.1",
        sftp_port=server.port,
        sftp_user="bossa-sftp",
        sftp_key_file=server.client_key,
        sftp_known_hosts=server.known_hosts,
        sftp_dir="in",
        sftp_timeout_s=5.0,
        **more,  # type: ignore[arg-type]
    )


@pytest.fixture
async def runtime(journal: Journal, db_url: str) -> AsyncIterator[Runtime]:
    rt = Runtime.around(db_url, journal, embedded=False)
    yield rt
    from bossa.partners import platform

    await platform(rt.pool, rt.journal).close()
    await rt.deliverer.close()


async def seed_partner(
    runtime: Runtime,
    name: str,
    *,
    template: str,
    definition: str = CHECK,
    rate_per_s: int = 1000,
    daily_quota: int = 1_000_000,
    partner_quota: int = 1_000_000,
) -> None:
    pool = runtime.pool
    await set_partner(
        pool,
        PartnerRequest(
            name=name, display_name=name.upper(), rate_per_s=100_000, daily_quota=partner_quota
        ),
        actor="test",
    )
    await register_template(
        pool,
        TemplateRequest(
            name=template,
            partner=name,
            definition=definition,
            limits=Limits(rate_per_s=rate_per_s, daily_quota=daily_quota),
        ),
        actor="test",
    )
    await add_policy(
        pool,
        PolicyRequest(
            partner=name,
            valid_from=date(2020, 1, 1),
            currency="EUR",
            per_use_fee=5,
            per_unit_fee=2,
            revenue_share_bp=1500,
        ),
        actor="test",
    )


async def seed_legacy(runtime: Runtime, legacy: LegacyServer, *, timeout_ms: int = 1000) -> None:
    await set_system(
        runtime.pool,
        SystemRequest(role="sms", kind=SystemKind.REST, url=legacy.url, timeout_ms=timeout_ms),
        actor="test",
    )
    await set_system(
        runtime.pool,
        SystemRequest(
            role="location", kind=SystemKind.SOAP, url=f"{legacy.url}/soap", timeout_ms=timeout_ms
        ),
        actor="test",
    )


async def seed_subscriber(runtime: Runtime, customer: str, *, funds: int = 0) -> str:
    """A customer with an active contract, and a EUR account with `funds` prepaid."""
    async with runtime.pool.connection() as conn, conn.transaction():
        await conn.execute(
            "insert into customers.products (code, name, created_by)"
            " values ('SMS', 'sms', 't') on conflict do nothing"
        )
        await conn.execute(
            "insert into customers.customers (id, name, created_by) values (%s, %s, 't')",
            (customer, customer),
        )
        await conn.execute(
            "insert into customers.contracts (sa_id, customer_id, product_code, created_by)"
            " values (%s, %s, 'SMS', 't')",
            (f"SA-{customer}", customer),
        )
        account = f"ACC-{customer}"
        await open_account(
            conn, AccountRequest(account=account, customer=customer, currency="EUR"), actor="t"
        )
        if funds:
            await post(conn, account, DEPOSIT, funds, actor="t")
    return account
