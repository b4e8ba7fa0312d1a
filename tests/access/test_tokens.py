"""API tokens and identity-provider JWTs on real PostgreSQL: shown once, stored hashed,
revocation and expiry effective on the next request, JWTs checked against the issuer's
keys (from a file and from a JWKS endpoint served on the loopback)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bossa.access import AccessSettings, Authenticator, Role, create_token, revoke_token
from bossa.access.models import TokenRequest
from bossa.access.service import list_tokens
from bossa.db import Pool
from bossa.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated

ISSUER = "https://idp.example.test"


async def test_token_is_shown_once_and_stored_hashed(pool: Pool, db_url: str) -> None:
    created = await create_token(pool, TokenRequest(name="alice", role=Role.ADMIN), actor="t")
    assert created.token.startswith(f"bossa_{created.id}_")
    with psycopg.connect(db_url) as conn:
        stored = conn.execute("select secret_hash from access.tokens").fetchone()
    assert stored is not None
    secret = created.token.split("_", 2)[2]
    assert secret not in stored[0]
    assert stored[0].startswith("$argon2id$")
    listed = await list_tokens(pool)
    assert [t.name for t in listed] == ["alice"]
    assert "token" not in listed[0].model_dump()


async def test_authenticate_revoke_and_last_use(pool: Pool) -> None:
    auth = Authenticator(pool)
    created = await create_token(
        pool, TokenRequest(name="ops", role=Role.BILLING_OPERATOR), actor="t"
    )
    principal = await auth.authenticate(f"Bearer {created.token}")
    assert (principal.name, principal.role, principal.actor) == (
        "ops",
        Role.BILLING_OPERATOR,
        "token:ops",
    )
    # A second request takes the cached verification path and still reads the row.
    assert (await auth.authenticate(f"bearer {created.token}")).name == "ops"
    assert (await list_tokens(pool))[0].last_used_at is not None
    await revoke_token(pool, "ops", actor="t")
    with pytest.raises(Unauthenticated, match="revoked"):
        await auth.authenticate(f"Bearer {created.token}")
    with pytest.raises(NotFound):
        await revoke_token(pool, "ops", actor="t")


async def test_wrong_secret_expired_and_malformed_are_refused(pool: Pool, db_url: str) -> None:
    auth = Authenticator(pool)
    created = await create_token(pool, TokenRequest(name="bob", role=Role.READ_ONLY), actor="t")
    forged = created.token[:-4] + ("AAAA" if not created.token.endswith("AAAA") else "BBBB")
    for header in (None, "", "Basic abc", "Bearer", f"Bearer {forged}", "Bearer bossa_x_y"):
        with pytest.raises(Unauthenticated):
            await auth.authenticate(header)
    with psycopg.connect(db_url) as conn:
        conn.execute("update access.tokens set expires_at = now() - interval '1 second'")
    with pytest.raises(Unauthenticated, match="expired"):
        await auth.authenticate(f"Bearer {created.token}")


async def test_token_names_and_bounds(pool: Pool) -> None:
    await create_token(pool, TokenRequest(name="carol", role=Role.PARTNER), actor="t")
    with pytest.raises(Conflict):
        await create_token(pool, TokenRequest(name="carol", role=Role.ADMIN), actor="t")
    with pytest.raises(InvalidInput, match="name"):
        await create_token(pool, TokenRequest(name="bad name;", role=Role.ADMIN), actor="t")
    with pytest.raises(ValueError, match="expires_days"):
        TokenRequest(name="x", role=Role.ADMIN, expires_days=100_000)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwt(key: rsa.RSAPrivateKey, **claims: object) -> str:
    body = {"iss": ISSUER, "sub": "dana", "aud": "bossa", "exp": int(time.time()) + 60}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, "RS256", {"kid": "k1"})


@pytest.fixture
def key_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Path:
    path = tmp_path / "idp.pem"
    path.write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


async def test_jwt_from_a_key_file(pool: Pool, key_file: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    settings = AccessSettings(jwt_issuer=ISSUER, jwt_audience="bossa", jwt_public_key_file=key_file)
    auth = Authenticator(pool, settings)
    principal = await auth.authenticate(f"Bearer {_jwt(rsa_key, bossa_role='front-office')}")
    assert (principal.actor, principal.role) == ("jwt:dana", Role.FRONT_OFFICE)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = [
        _jwt(other, bossa_role="admin"),  # signed by someone else
        _jwt(rsa_key, bossa_role="admin", iss="https://evil.test"),
        _jwt(rsa_key, bossa_role="admin", aud="another-app"),
        _jwt(rsa_key, bossa_role="admin", exp=int(time.time()) - 3600),
        _jwt(rsa_key, bossa_role="admin", exp=None),
        jwt.encode({"iss": ISSUER, "sub": "x", "exp": 2**31, "bossa_role": "admin"}, "k" * 32),
    ]
    for token in refused:
        with pytest.raises(Unauthenticated):
            await auth.authenticate(f"Bearer {token}")
    with pytest.raises(Forbidden, match="role"):
        await auth.authenticate(f"Bearer {_jwt(rsa_key, bossa_role='root')}")


@pytest.fixture
def jwks_url(rsa_key: rsa.RSAPrivateKey) -> Iterator[str]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Keys(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Keys)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


async def test_jwt_from_a_jwks_endpoint(
    pool: Pool, jwks_url: str, rsa_key: rsa.RSAPrivateKey
) -> None:
    settings = AccessSettings(jwt_issuer=ISSUER, jwt_audience="bossa", jwt_jwks_url=jwks_url)
    auth = Authenticator(pool, settings)
    principal = await auth.authenticate(f"Bearer {_jwt(rsa_key, bossa_role='read-only')}")
    assert principal.role == Role.READ_ONLY


def test_settings_refuse_symmetric_algorithms_and_plain_http() -> None:
    with pytest.raises(ValueError, match="asymmetric"):
        AccessSettings(jwt_algorithms=["HS256"])
    with pytest.raises(ValueError, match="https"):
        AccessSettings(jwt_jwks_url="http://idp.example.test/keys")


async def test_a_remembered_row_is_read_again_before_it_expires(pool: Pool) -> None:
    # The run route's deferred principals reuse a row read less than a second ago; past
    # half a second a request starts a read of it in the background (so that a busy
    # token's requests never wait for one). A revocation that read finds refuses the next
    # request, even within the second.
    auth = Authenticator(pool)
    created = await create_token(pool, TokenRequest(name="acme", role=Role.PARTNER), actor="t")
    header = f"Bearer {created.token}"
    assert (await auth.authenticate(header, deferred=True)).confirmed  # the row is read
    await revoke_token(pool, "acme", actor="t")
    await asyncio.sleep(0.55)
    remembered = await auth.authenticate(header, deferred=True)
    assert not remembered.confirmed  # answered from the remembered row, not held up
    await asyncio.gather(*auth._refreshing.values())
    with pytest.raises(Unauthenticated, match="revoked"):
        await auth.authenticate(header, deferred=True)


async def test_a_row_read_again_in_the_background_serves_another_second(pool: Pool) -> None:
    auth = Authenticator(pool)
    created = await create_token(pool, TokenRequest(name="acme", role=Role.PARTNER), actor="t")
    header = f"Bearer {created.token}"
    await auth.authenticate(header, deferred=True)
    await asyncio.sleep(0.55)
    await auth.authenticate(header, deferred=True)
    await asyncio.gather(*auth._refreshing.values())
    await asyncio.sleep(0.55)  # over a second after the first read, half a second after the second
    assert not (await auth.authenticate(header, deferred=True)).confirmed
