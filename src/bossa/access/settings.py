"""Access settings: operators' identity providers (OAuth2 bearer JWTs) and the CLI's actor."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from bossa.config import BossaSettings, register

__all__ = ["AccessSettings"]

# Asymmetric only: with a shared secret anyone who can validate a token can also mint one.
_JWT_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


@register
class AccessSettings(BossaSettings):
    section: ClassVar[str] = "access"
    model_config = SettingsConfigDict(env_prefix="BOSSA_ACCESS_")

    #: The `iss` every accepted JWT must carry; unset: bearer JWTs are not accepted.
    jwt_issuer: str | None = Field(default=None, max_length=2000)
    #: The `aud` a JWT must carry (bossa's client id at the identity provider).
    jwt_audience: str | None = Field(default=None, max_length=2000)
    #: Where the issuer publishes its signing keys (JWKS), fetched and cached.
    jwt_jwks_url: str | None = Field(default=None, max_length=2000)
    #: Or a PEM public key file, for an issuer without a JWKS endpoint.
    jwt_public_key_file: Path | None = None
    jwt_algorithms: list[str] = Field(default=["RS256", "ES256"], min_length=1, max_length=10)
    #: The claim that names the bossa role (admin, billing-operator, ...).
    jwt_role_claim: str = Field(default="bossa_role", min_length=1, max_length=200)
    #: Clock skew allowed on `exp` and `nbf`.
    jwt_leeway_s: int = Field(default=30, ge=0, le=600)
    #: The actor the CLI records in audits; unset: the operating-system user.
    cli_actor: str | None = Field(default=None, min_length=1, max_length=64)

    @field_validator("jwt_algorithms")
    @classmethod
    def _asymmetric(cls, value: list[str]) -> list[str]:
        refused = [a for a in value if a not in _JWT_ALGORITHMS]
        if refused:
            raise ValueError(f"only asymmetric algorithms are accepted, not {', '.join(refused)}")
        return value

    @field_validator("jwt_jwks_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(
            ("https://", "http://127.0.0.1", "http://localhost")
        ):
            raise ValueError("must be an https:// URL (plain http only on the loopback)")
        return value
