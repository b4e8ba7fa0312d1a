"""Payments that never wait for a bill run (B2, B3).

Outside a run a payment posts to the online books. During a run it is staged and
answered at once: a deposit goes to the staged-deposit store; paying arrears goes to the
write-off staging store and, if that clears what the account owes, restores its service
at once. The decision staged-or-online is taken under a shared lock that a run's start
and end take exclusively, so no payment straddles the snapshot or the switch back.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bossa.billing.queries import QUERIES
from bossa.db import Conn
from bossa.errors import Conflict, InvalidInput
from bossa.journal import Journal, NewEntry
from bossa.ledger import store as ledger
from bossa.ledger.money import format_minor, to_minor

__all__ = [
    "SERVICE_LANE",
    "PaymentRequest",
    "account_summary",
    "authorize",
    "pay",
    "service_changes",
]

#: Suspend and restore commands for contracts go through provisioning from this lane.
SERVICE_LANE = "billing.service"


class PaymentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    account: str = Field(min_length=1, max_length=64)
    # Any: to_minor checks it and says why (a float, too many decimals, not a number).
    amount: Any = Field(
        description="A decimal string in the currency ('12.50') or minor units as an integer string"
    )
    currency: str = Field(min_length=3, max_length=3)

    @classmethod
    def parse(cls, data: Any) -> PaymentRequest:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise InvalidInput(
                first["msg"], field=str(first["loc"][0]) if first["loc"] else "payment"
            ) from exc

    def fingerprint(self, kind: str) -> str:
        text = json.dumps({"kind": kind, **self.model_dump()}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


async def pay(
    journal: Journal,
    request: PaymentRequest,
    *,
    kind: str,
    actor: str,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """Take a deposit (kind 'deposit') or an arrears payment (kind 'arrears')."""
    if kind not in ("deposit", "arrears"):
        raise InvalidInput("must be deposit or arrears", field="kind")
    fingerprint = request.fingerprint(kind)
    try:
        async with journal.pool.connection() as conn, conn.transaction():
            if idempotency_key is not None:
                replay = await _replay(conn, idempotency_key, fingerprint)
                if replay is not None:
                    return replay
            outcome = await _take(
                conn, journal, request, kind=kind, actor=actor, key=idempotency_key
            )
            if idempotency_key is not None:
                await conn.execute(
                    QUERIES["record_payment"],
                    {
                        "key": idempotency_key,
                        "hash": fingerprint,
                        "account": request.account,
                        "kind": kind,
                        "amount": outcome["amount_minor"],
                        "outcome": Jsonb(outcome),
                    },
                )
    except pg_errors.UniqueViolation:
        if idempotency_key is None:
            raise
        async with journal.pool.connection() as conn:  # a concurrent twin won: replay it
            replay = await _replay(conn, idempotency_key, fingerprint)
        if replay is None:
            raise
        return replay
    return outcome


async def _replay(conn: Conn, key: str, fingerprint: str) -> dict[str, Any] | None:
    row = await (await conn.execute(QUERIES["payment_by_key"], {"key": key})).fetchone()
    if row is None:
        return None
    if row["request_hash"] != fingerprint:
        raise Conflict("was used before for a payment with other content", field="idempotency_key")
    return {**row["outcome"], "replay": True}


async def _take(
    conn: Conn,
    journal: Journal,
    request: PaymentRequest,
    *,
    kind: str,
    actor: str,
    key: str | None,
) -> dict[str, Any]:
    account = await ledger.account(conn, request.account, lock=True)
    if request.currency.upper() != account.currency:
        raise InvalidInput(f"is not the account's currency ({account.currency})", field="currency")
    minor = to_minor(request.amount, account.exponent, currency=account.currency)
    await conn.execute(QUERIES["lock_books_shared"])
    run = await (await conn.execute(QUERIES["open_run"])).fetchone()
    outcome: dict[str, Any] = {
        "account": account.id,
        "kind": kind,
        "amount": format_minor(minor, account.exponent),
        "amount_minor": minor,
        "currency": account.currency,
        "restored": [],
    }
    if kind == "arrears":
        books = await ledger.balances(conn, account.id)
        staged = await (
            await conn.execute(QUERIES["staged_totals"], {"account": account.id})
        ).fetchone()
        assert staged is not None
        arrears = books["receivable"] - int(staged["writeoffs"])
        if arrears <= 0:
            raise InvalidInput("the account has no arrears; pay a deposit instead", field="amount")
        if minor > arrears:
            raise InvalidInput(
                f"exceeds the arrears of {format_minor(arrears, account.exponent)} "
                f"{account.currency}; pay the rest as a deposit",
                field="amount",
            )
        if account.status == "suspended" and minor == arrears:
            outcome["restored"] = await service_changes(
                conn, journal, account.id, restore=True, reason=f"arrears paid by {actor}"
            )
    reference = f"payment:{key}" if key else None
    if run is not None:  # B2: staged, answered at once
        query = "stage_deposit" if kind == "deposit" else "stage_writeoff"
        row = await (
            await conn.execute(
                QUERIES[query],
                {
                    "run": run["id"],
                    "account": account.id,
                    "amount": minor,
                    "key": key,
                    "actor": actor,
                },
            )
        ).fetchone()
        assert row is not None
        outcome.update(
            status="staged",
            run_id=run["id"],
            staged_id=row["id"],
            received_at=row["received_at"].isoformat(),
        )
        return outcome
    shape = ledger.DEPOSIT if kind == "deposit" else ledger.WRITEOFF
    tx = await ledger.post(
        conn,
        account.id,
        "deposit" if kind == "deposit" else "writeoff",
        minor,
        shape,
        actor=actor,
        key=reference,
        reference=reference,
    )
    outcome.update(status="posted", transaction_id=tx)
    return outcome


async def service_changes(
    conn: Conn, journal: Journal, account_id: str, *, restore: bool, reason: str
) -> list[str]:
    """Suspend or restore every contract of the account through provisioning (4204/4205),
    queued in this transaction on the service lane; returns the contracts changed."""
    status = "active" if restore else "suspended"
    await conn.execute(QUERIES["set_account_status"], {"account": account_id, "status": status})
    contracts = await (
        await conn.execute(QUERIES["contracts_of"], {"account": account_id})
    ).fetchall()
    entries = [
        NewEntry(
            SERVICE_LANE,
            "service.resume" if restore else "service.suspend",
            {
                "account": account_id,
                "sa_id": c["sa_id"],
                "product": c["product_code"],
                "intf_code": "4205" if restore else "4204",
                "reason": reason,
            },
            key=c["sa_id"],
        )
        for c in contracts
    ]
    for contract in contracts:
        await conn.execute(
            QUERIES["set_contract_status"], {"sa_id": contract["sa_id"], "status": status}
        )
    await journal.enqueue(entries, conn=conn)
    return [c["sa_id"] for c in contracts]


async def account_summary(conn: Conn, account_id: str) -> dict[str, Any]:
    """An account with its books, available funds and what is staged for it."""
    acct = await ledger.account(conn, account_id)
    books = await ledger.balances(conn, account_id)
    staged = await (
        await conn.execute(QUERIES["staged_totals"], {"account": account_id})
    ).fetchone()
    return {
        "account": acct.__dict__,
        "books": books,
        "available": ledger.available(books),
        "staged": staged,
    }


async def authorize(
    journal: Journal, account_id: str, amount: object, currency: str
) -> dict[str, Any]:
    """B3: may this order be charged now? Online funds plus what is staged for the account."""
    async with journal.pool.connection() as conn:
        account = await ledger.account(conn, account_id)
        if currency.upper() != account.currency:
            raise InvalidInput(
                f"is not the account's currency ({account.currency})", field="currency"
            )
        minor = to_minor(amount, account.exponent, currency=account.currency)
        books = await ledger.balances(conn, account_id)
        staged = await (
            await conn.execute(QUERIES["staged_totals"], {"account": account_id})
        ).fetchone()
    assert staged is not None
    funds = ledger.available(books) + int(staged["deposits"]) + int(staged["writeoffs"])
    return {
        "account": account_id,
        "authorized": funds >= minor,
        "funds": format_minor(funds, account.exponent),
        "amount": format_minor(minor, account.exponent),
        "currency": account.currency,
    }
