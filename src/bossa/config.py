"""Settings: one pydantic-settings class per module, gathered and checked at start-up.

Every class reads `BOSSA_<SECTION>_<FIELD>` environment variables (a few top-level ones,
such as `BOSSA_DATABASE_URL`, read `BOSSA_<FIELD>`), then the `[section]` table of the
TOML file named by `BOSSA_CONFIG`, then its defaults. A bad value raises `ConfigError`
naming the environment variable and the reason, so an operator knows what to fix.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from bossa.errors import ConfigError

__all__ = ["SECTIONS", "BossaSettings", "config_file", "load", "load_all", "masked", "register"]

CONFIG_ENV = "BOSSA_CONFIG"


def config_file() -> Path | None:
    """The TOML file named by BOSSA_CONFIG, if any; a name that does not exist is an error."""
    name = os.environ.get(CONFIG_ENV)
    if not name:
        return None
    path = Path(name).expanduser()
    if not path.is_file():
        raise ConfigError(f"file {path} does not exist", field=CONFIG_ENV)
    return path


def _read_config_file() -> dict[str, Any]:
    path = config_file()
    if path is None:
        return {}
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", field=CONFIG_ENV) from exc


class _TomlSection(InitSettingsSource):
    """The `[section]` table of the BOSSA_CONFIG file, below the environment in priority."""

    def __init__(self, settings_cls: type[BaseSettings], section: str) -> None:
        table = _read_config_file().get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] must be a table", field=CONFIG_ENV)
        super().__init__(settings_cls, table)


class BossaSettings(BaseSettings):
    """Base of every module's settings class; `section` names its TOML table."""

    section: ClassVar[str]
    model_config = SettingsConfigDict(extra="forbid", validate_default=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSection(settings_cls, cls.section))

    @classmethod
    def env_name(cls, field: str) -> str:
        prefix = cls.model_config.get("env_prefix", "")
        return f"{prefix}{field}".upper()


SECTIONS: dict[str, type[BossaSettings]] = {}
S = TypeVar("S", bound=BossaSettings)


def register(cls: type[S]) -> type[S]:
    """Class decorator: make a module's settings part of `bossa config show` and start-up checks."""
    SECTIONS[cls.section] = cls
    return cls


def load(cls: type[S], **overrides: Any) -> S:
    """Build one settings class, turning validation errors into a ConfigError naming the setting."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        shown = first.get("input")
        got = f" (got {shown!r})" if isinstance(shown, str | int | float) else ""
        if _secret(cls, field):
            got = ""  # the value may be, or hold, the secret itself
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(
            f"{message}{got}; set it in the environment or as [{cls.section}] {field} "
            f"in the {CONFIG_ENV} file",
            field=cls.env_name(field) if field else cls.section,
        ) from exc


def _secret(cls: type[BossaSettings], field: str) -> bool:
    info = cls.model_fields.get(field)
    secret_type = info is not None and "SecretStr" in repr(info.annotation)
    return secret_type or any(word in field for word in (*_SECRET_WORDS, "url"))


def load_all() -> dict[str, BossaSettings]:
    """Every registered section, so that one bad setting anywhere stops start-up early."""
    _import_modules()
    return {name: load(cls) for name, cls in SECTIONS.items()}


def _import_modules() -> None:
    # Importing a module's settings registers its section.
    import bossa.access.settings
    import bossa.alerts.settings
    import bossa.api.settings
    import bossa.billing.settings
    import bossa.db.settings
    import bossa.imports.settings
    import bossa.journal.settings
    import bossa.logs
    import bossa.partners.settings
    import bossa.provisioning.settings
    import bossa.sync.settings  # noqa: F401


_URL_PASSWORD = re.compile(r"(?P<head>://[^:/@]+:)(?P<secret>[^@]+)(?P<tail>@)")
_SECRET_WORDS = ("password", "secret", "token", "key")


def masked(settings: BossaSettings) -> dict[str, Any]:
    """The settings as plain values with secrets replaced by '***'."""
    shown: dict[str, Any] = {}
    for name, value in settings.model_dump().items():
        if isinstance(value, SecretStr) or (
            any(word in name for word in _SECRET_WORDS) and value not in (None, "")
        ):
            shown[name] = "***"
        elif isinstance(value, str) and "://" in value:
            shown[name] = _URL_PASSWORD.sub(r"\g<head>***\g<tail>", value)
            shown[name] = re.sub(r"password=[^&\s]+", "password=***", shown[name])
        elif isinstance(value, Path):
            shown[name] = str(value)
        else:
            shown[name] = value
    return shown
