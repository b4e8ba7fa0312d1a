"""Who may do what: roles, permissions, the matrix between them, and API tokens' shape.

No I/O. A role is what an operator hands a person or a system; a permission is what a
route or command needs. The matrix is data, so `docs/security.md` and the role-matrix test
read the same table the code enforces.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from bossa.errors import InvalidInput, Unauthenticated

__all__ = [
    "ROLE_PERMISSIONS",
    "TOKEN_PREFIX",
    "Permission",
    "Principal",
    "Role",
    "TokenCreated",
    "TokenInfo",
    "TokenRequest",
    "WhoAmI",
    "allowed",
    "new_token",
    "parse_token",
]


class Permission(StrEnum):
    #: Ask who one is: every role has it.
    SELF_READ = "self.read"
    JOURNAL_READ = "journal.read"
    #: Retry, park, discard, edit entries; enqueue on operators' own lanes; lane settings.
    JOURNAL_OPERATE = "journal.operate"
    PROVISIONING_READ = "provisioning.read"
    #: Submit orders (what a front office or an order channel does).
    PROVISIONING_ORDER = "provisioning.order"
    #: Buffers: retry, edit binds, pause and resume a division.
    PROVISIONING_OPERATE = "provisioning.operate"
    #: Divisions (server URLs and credentials) and plans (the commands servers run).
    PROVISIONING_CONFIGURE = "provisioning.configure"
    BILLING_READ = "billing.read"
    #: Bill runs, bill-run windows, settlement, dunning.
    BILLING_RUN = "billing.run"
    #: Deposits and arrears payments: money in.
    PAYMENTS_WRITE = "payments.write"
    #: Open and change billing accounts.
    ACCOUNTS_WRITE = "accounts.write"
    #: Read the catalogue, customers and contracts.
    CUSTOMERS_READ = "customers.read"
    #: Create and change customers, and contracts through their lifecycle (each change
    #: is a provisioning order).
    CUSTOMERS_WRITE = "customers.write"
    #: Products and their prices.
    CATALOGUE_WRITE = "catalogue.write"
    #: Create, list and revoke API tokens.
    ACCESS_ADMIN = "access.admin"
    METRICS_READ = "metrics.read"
    #: The partner platform's open interface (O2).
    PARTNER_USE = "partner.use"
    #: Partners, their templates and limits, legacy systems, billing policies, MDR files.
    PARTNERS_CONFIGURE = "partners.configure"
    #: Bulk import jobs and their rejected rows (which quote the rows: customers' data).
    IMPORTS_READ = "imports.read"
    #: Bulk import of customers, accounts, contracts and products.
    IMPORTS_RUN = "imports.run"
    #: Missed-call alerts: the trial set, subscribers, a callee's calls and notices.
    ALERTS_READ = "alerts.read"
    #: Change the trial set (ranges, quota) and register or unregister subscribers.
    ALERTS_CONFIGURE = "alerts.configure"
    #: Report missed calls over HTTP (networks that do not divert to the SIP intake).
    ALERTS_INTAKE = "alerts.intake"
    #: The infra channel (O4): a legacy system runs one biz object.
    PARTNERS_INFRA = "partners.infra"
    #: Send usage records (CDRs) to rating over HTTP (mediation; files use the inbox).
    RATING_INTAKE = "rating.intake"


class Role(StrEnum):
    ADMIN = "admin"
    PROVISIONING_OPERATOR = "provisioning-operator"
    BILLING_OPERATOR = "billing-operator"
    FRONT_OFFICE = "front-office"
    READ_ONLY = "read-only"
    PARTNER = "partner"


_READ = {
    Permission.SELF_READ,
    Permission.JOURNAL_READ,
    Permission.PROVISIONING_READ,
    Permission.BILLING_READ,
    Permission.METRICS_READ,
    Permission.CUSTOMERS_READ,
    Permission.ALERTS_READ,
}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.PROVISIONING_OPERATOR: frozenset(
        _READ
        | {
            Permission.JOURNAL_OPERATE,
            Permission.PROVISIONING_ORDER,
            Permission.PROVISIONING_OPERATE,
            Permission.PROVISIONING_CONFIGURE,
            Permission.ALERTS_CONFIGURE,
        }
    ),
    Role.BILLING_OPERATOR: frozenset(
        _READ
        | {
            Permission.BILLING_RUN,
            Permission.PAYMENTS_WRITE,
            Permission.ACCOUNTS_WRITE,
            Permission.CATALOGUE_WRITE,
        }
    ),
    Role.FRONT_OFFICE: frozenset(
        {
            Permission.SELF_READ,
            Permission.PROVISIONING_READ,
            Permission.PROVISIONING_ORDER,
            Permission.BILLING_READ,
            Permission.PAYMENTS_WRITE,
            Permission.ACCOUNTS_WRITE,
            Permission.CUSTOMERS_READ,
            Permission.CUSTOMERS_WRITE,
        }
    ),
    Role.READ_ONLY: frozenset(_READ),
    Role.PARTNER: frozenset({Permission.SELF_READ, Permission.PARTNER_USE}),
}


def allowed(role: Role, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS[role]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is acting: the audit's actor comes from here, never from a request body."""

    name: str
    role: Role
    #: "token", "jwt" or "cli".
    via: str
    token_id: str | None = None
    #: False for a token taken from the authenticator's short-lived cache without reading
    #: its row (`authenticate(deferred=True)`): the route must confirm it (`confirm`, or
    #: `store.live_tokens` in the transaction that makes its change) before any effect.
    confirmed: bool = True

    @property
    def actor(self) -> str:
        return f"{self.via}:{self.name}"


# A token reads `bossa_<id>_<secret>`: the id finds the row without a scan, the secret is
# only ever compared with its argon2 hash. The prefix lets secret scanners recognise it.
TOKEN_PREFIX = "bossa_"  # noqa: S105  a prefix that marks tokens, not a secret
_TOKEN = re.compile(r"^bossa_(?P<id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def new_token() -> tuple[str, str, str]:
    """A fresh (id, secret, token text); the text is shown once and never stored."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return token_id, secret, f"{TOKEN_PREFIX}{token_id}_{secret}"


def parse_token(text: str) -> tuple[str, str]:
    """(id, secret) of a bossa token; anything else is refused without saying more."""
    match = _TOKEN.match(text)
    if match is None:
        raise Unauthenticated("the bearer token is not a valid bossa token")
    return match.group("id"), match.group("secret")


class TokenRequest(BaseModel):
    name: str = Field(
        min_length=1,
        max_length=64,
        description="Who or what holds the token (a person, a system); recorded as the actor",
    )
    role: Role
    expires_days: int | None = Field(
        default=90,
        ge=1,
        le=3650,
        description="Days until the token stops working; null for a token without expiry",
    )

    def checked_name(self) -> str:
        if not _NAME.match(self.name):
            raise InvalidInput(
                "letters, digits and . _ @ - only, starting with a letter or digit",
                field="name",
            )
        return self.name


class TokenInfo(BaseModel):
    """A token as listed: never its secret."""

    id: str
    name: str
    role: Role
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None
    last_used_at: datetime | None


class TokenCreated(TokenInfo):
    token: str = Field(description="The bearer token; shown this once, stored only as a hash")


class WhoAmI(BaseModel):
    name: str
    role: Role
    via: str = Field(description="token, jwt or cli")
    permissions: list[Permission]
