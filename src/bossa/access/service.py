"""Access control's use cases: authenticate a request, and create, list and revoke tokens.

Tokens are hashed with argon2 (argon2-cffi): a leaked `access.tokens` table gives an
attacker nothing to replay. argon2 is slow on purpose (tens of milliseconds), so the
`Authenticator` remembers, per token id, a SHA-256 of a secret it has already verified
against the stored hash; the token's row is still read on every request, so a
revocation or an expiry takes effect on the next one. The one exception is a route that
asks for a deferred principal (`authenticate(deferred=True)`, the partners' runs): a row
read less than a second ago is used as it was, the principal is marked unconfirmed, and
the route confirms the token before any effect, in the transaction that makes its change
(`store.live_tokens`) or by reading its row (`confirm`). A revocation committed before a
request is still seen by that request, and the round trip per request is saved. Once the
row is half a second old it is read again in the background, so that a busy token's
requests never wait for that read.

Bearer JWTs from an operator's identity provider are checked with PyJWT against the
configured issuer's keys.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import hmac
import time
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from bossa.access import store
from bossa.access.metrics import DENIED, GRANTED
from bossa.access.models import (
    TOKEN_PREFIX,
    Permission,
    Principal,
    Role,
    TokenCreated,
    TokenInfo,
    TokenRequest,
    allowed,
    new_token,
    parse_token,
)
from bossa.access.settings import AccessSettings
from bossa.db import Pool, user_errors
from bossa.errors import ConfigError, Forbidden, NotFound, Unauthenticated
from bossa.logs import get_logger

__all__ = [
    "Authenticator",
    "cli_principal",
    "confirm",
    "create_token",
    "list_tokens",
    "require",
    "revoke_token",
]

log = get_logger("bossa.access")

# OWASP's argon2id baseline (19 MiB, 2 passes): a token's secret has 256 bits of entropy,
# so the hash guards a leaked table, not a guessable password.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
_VERIFIED_MAX = 10_000
#: How long a token's row read for one request serves deferred principals after it.
_ROW_TTL_S = 1.0


class Authenticator:
    """Turns an `Authorization` header into a `Principal`. One per process (the runtime's)."""

    def __init__(self, pool: Pool, settings: AccessSettings | None = None) -> None:
        self.pool = pool
        self.settings = settings or AccessSettings()
        self._verified: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._rows: dict[str, tuple[float, dict[str, Any]]] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self._jwt_key: Any = None
        self._jwks: jwt.PyJWKClient | None = None
        if self.settings.jwt_jwks_url:
            self._jwks = jwt.PyJWKClient(self.settings.jwt_jwks_url, cache_keys=True, timeout=5)
        elif self.settings.jwt_public_key_file is not None:
            try:
                self._jwt_key = self.settings.jwt_public_key_file.read_text()
            except OSError as exc:
                raise ConfigError(
                    f"cannot read {self.settings.jwt_public_key_file}: {exc.strerror}",
                    field="BOSSA_ACCESS_JWT_PUBLIC_KEY_FILE",
                ) from None
        if self.settings.jwt_issuer and self._jwks is None and self._jwt_key is None:
            raise ConfigError(
                "a JWT issuer needs its keys: set BOSSA_ACCESS_JWT_JWKS_URL or "
                "BOSSA_ACCESS_JWT_PUBLIC_KEY_FILE",
                field="BOSSA_ACCESS_JWT_ISSUER",
            )

    async def authenticate(self, authorization: str | None, *, deferred: bool = False) -> Principal:
        """The caller. With `deferred`, a token whose row was read in the last second is
        not read again: the principal comes back unconfirmed (see the module's text)."""
        if not authorization:
            DENIED.labels("missing").inc()
            raise Unauthenticated("a bearer token is required (Authorization: Bearer ...)")
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            DENIED.labels("malformed").inc()
            raise Unauthenticated("use the Bearer scheme: Authorization: Bearer <token>")
        if credential.startswith(TOKEN_PREFIX):
            found = self._cached(credential) if deferred else None
            principal = found or await self._token(credential)
        elif self.settings.jwt_issuer:
            principal = await self._jwt(credential)
        else:
            DENIED.labels("malformed").inc()
            raise Unauthenticated("the bearer token is not a valid bossa token")
        GRANTED.labels(principal.via).inc()
        return principal

    async def _token(self, credential: str) -> Principal:
        token_id, secret = parse_token(credential)
        async with self.pool.connection() as conn:
            row = await store.token_for_auth(conn, token_id)
        if row is None or row["revoked_at"] is not None or row["expired"]:
            self._rows.pop(token_id, None)  # deferred principals read the row again
        if row is None:
            DENIED.labels("unknown").inc()
            raise Unauthenticated("unknown token")
        if row["revoked_at"] is not None:
            DENIED.labels("revoked").inc()
            raise Unauthenticated("this token was revoked")
        if row["expired"]:
            DENIED.labels("expired").inc()
            raise Unauthenticated("this token has expired")
        if not await self._secret_matches(token_id, secret, row["secret_hash"]):
            DENIED.labels("bad-secret").inc()
            log.warning("access.bad_secret", token_id=token_id, name=row["name"])
            raise Unauthenticated("unknown token")
        if not row["used_lately"]:  # a second round trip at most once a minute per token
            async with self.pool.connection() as conn:
                await store.touch_token(conn, token_id)
        if len(self._rows) >= _VERIFIED_MAX:
            self._rows.clear()
        self._rows[token_id] = (time.monotonic(), row)
        return Principal(row["name"], Role(row["role"]), "token", token_id)

    def _cached(self, credential: str) -> Principal | None:
        """An unconfirmed principal from a row read less than a second ago, for the
        secret verified then; None when the row must be read."""
        try:
            token_id, secret = parse_token(credential)
        except Unauthenticated:
            return None
        cached = self._rows.get(token_id)
        now = time.monotonic()
        if cached is None or now - cached[0] > _ROW_TTL_S:
            return None
        row = cached[1]
        if now - cached[0] > _ROW_TTL_S / 2:
            self._refresh(token_id)
        expires_at = row["expires_at"]
        if expires_at is not None and expires_at <= datetime.now(UTC):
            return None
        known = self._verified.get(token_id)
        digest = hashlib.sha256(secret.encode()).digest()
        if known is None or known[0] != row["secret_hash"]:
            return None
        if not hmac.compare_digest(known[1], digest):
            return None
        return Principal(row["name"], Role(row["role"]), "token", token_id, confirmed=False)

    def _refresh(self, token_id: str) -> None:
        """Read a token's row again in the background, once half its second is gone: under
        a steady stream of requests the row never gets old enough for a request to wait
        for it (before, every request that found it a second old read it: about 3% of a
        busy partner's runs, queued behind a round trip). At most one read per token at
        a time."""
        if token_id in self._refreshing:
            return
        task = asyncio.get_running_loop().create_task(self._reread(token_id))
        self._refreshing[token_id] = task
        task.add_done_callback(lambda _: self._refreshing.pop(token_id, None))

    async def _reread(self, token_id: str) -> None:
        read_at = time.monotonic()  # the row is as old as the moment it was asked for
        try:
            async with self.pool.connection() as conn:
                row = await store.token_for_auth(conn, token_id)
                if row is not None and not row["used_lately"]:
                    await store.touch_token(conn, token_id)
        except Exception as exc:  # the next request past the second reads it itself
            log.info("access.token_reread_failed", token_id=token_id, error=type(exc).__name__)
            return
        cached = self._rows.get(token_id)
        if row is None or row["revoked_at"] is not None or row["expired"]:
            self._rows.pop(token_id, None)  # the next request reads it and is refused
        elif cached is not None and cached[1]["secret_hash"] == row["secret_hash"]:
            self._rows[token_id] = (read_at, row)

    async def _secret_matches(self, token_id: str, secret: str, secret_hash: str) -> bool:
        digest = hashlib.sha256(secret.encode()).digest()
        known = self._verified.get(token_id)
        if known is not None and known[0] == secret_hash and hmac.compare_digest(known[1], digest):
            self._verified.move_to_end(token_id)
            return True
        try:
            await asyncio.to_thread(_HASHER.verify, secret_hash, secret)
        except (VerificationError, InvalidHashError):
            return False
        self._verified[token_id] = (secret_hash, digest)
        while len(self._verified) > _VERIFIED_MAX:
            self._verified.popitem(last=False)
        return True

    async def _jwt(self, credential: str) -> Principal:
        s = self.settings
        try:
            key = self._jwt_key
            if self._jwks is not None:
                key = (await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, credential)).key
            claims = jwt.decode(
                credential,
                key,
                algorithms=s.jwt_algorithms,
                audience=s.jwt_audience,
                issuer=s.jwt_issuer,
                leeway=s.jwt_leeway_s,
                options={
                    "require": ["exp", "iss", "sub"],
                    "verify_aud": s.jwt_audience is not None,
                },
            )
        except jwt.PyJWKClientError as exc:
            DENIED.labels("jwt-keys").inc()
            log.warning("access.jwks_unavailable", error=str(exc))
            raise Unauthenticated("the token's signing key could not be found") from None
        except jwt.InvalidTokenError as exc:
            DENIED.labels("jwt-invalid").inc()
            raise Unauthenticated(f"the bearer JWT was refused: {exc}") from None
        subject = str(claims["sub"])[:64]
        try:
            role = Role(str(claims.get(s.jwt_role_claim, "")))
        except ValueError:
            DENIED.labels("jwt-role").inc()
            raise Forbidden(
                f"the token carries no bossa role in its {s.jwt_role_claim!r} claim"
            ) from None
        return Principal(subject, role, "jwt")


async def confirm(pool: Pool, principal: Principal) -> None:
    """Refuse an unconfirmed principal whose token is no longer live (its row read now)."""
    if principal.confirmed or principal.token_id is None:
        return
    async with pool.connection() as conn:
        live = await store.live_tokens(conn, [principal.token_id])
    if principal.token_id not in live:
        DENIED.labels("revoked").inc()
        raise Unauthenticated("this token was revoked or has expired")


def require(principal: Principal, permission: Permission) -> None:
    """Refuse `principal` unless its role has `permission`."""
    if not allowed(principal.role, permission):
        DENIED.labels("forbidden").inc()
        raise Forbidden(f"role {principal.role} may not do this (needs {permission})")


def cli_principal(settings: AccessSettings | None = None) -> Principal:
    """The CLI's actor: it holds the database's credentials, so it acts as an admin, and is
    recorded as the configured name or the operating-system user."""
    settings = settings or AccessSettings()
    return Principal(settings.cli_actor or getpass.getuser(), Role.ADMIN, "cli")


async def create_token(pool: Pool, request: TokenRequest, *, actor: str) -> TokenCreated:
    name = request.checked_name()
    token_id, secret, text = new_token()
    secret_hash = await asyncio.to_thread(_HASHER.hash, secret)
    expires_at = (
        None
        if request.expires_days is None
        else datetime.now(UTC) + timedelta(days=request.expires_days)
    )
    async with pool.connection() as conn, conn.transaction():
        with user_errors():
            info = await store.create_token(
                conn,
                token_id=token_id,
                name=name,
                role=request.role.value,
                secret_hash=secret_hash,
                created_by=actor,
                expires_at=expires_at,
            )
    log.info("access.token_created", token_id=token_id, name=name, role=request.role, by=actor)
    return TokenCreated(**info.model_dump(), token=text)


async def list_tokens(
    pool: Pool, *, include_revoked: bool = False, limit: int = 100
) -> list[TokenInfo]:
    async with pool.connection() as conn:
        return await store.tokens(conn, include_revoked=include_revoked, limit=limit)


async def revoke_token(pool: Pool, ref: str, *, actor: str) -> TokenInfo:
    """Revoke the live token with this id or name; the next request with it gets a 401."""
    async with pool.connection() as conn, conn.transaction():
        info = await store.revoke_token(conn, ref, actor=actor)
    if info is None:
        raise NotFound(f"no live token {ref}", field="token")
    log.info("access.token_revoked", token_id=info.id, name=info.name, by=actor)
    return info
