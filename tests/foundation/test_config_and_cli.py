"""Settings and the command line: bad input gets one clear line and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bossa import config
from bossa.api.settings import ApiSettings
from bossa.db import DatabaseSettings
from bossa.errors import ConfigError


def bossa(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bossa.cli", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_bad_port_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOSSA_API_PORT", "eighty")
    with pytest.raises(ConfigError) as caught:
        config.load(ApiSettings)
    assert caught.value.field == "BOSSA_API_PORT"
    assert "eighty" in str(caught.value)


def test_toml_section_under_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "bossa.toml"
    file.write_text('[api]\nport = 9001\nhost = "0.0.0.0"\n[journal]\nmax_attempts = 4\n')
    monkeypatch.setenv("BOSSA_CONFIG", str(file))
    monkeypatch.setenv("BOSSA_API_HOST", "127.0.0.2")
    settings = config.load(ApiSettings)
    assert (settings.host, settings.port) == ("127.0.0.2", 9001)  # env wins over the file
    file.write_text("[api]\nbogus = 1\n")
    with pytest.raises(ConfigError, match="bogus"):
        config.load(ApiSettings)


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOSSA_DATABASE_URL", "postgresql://bossa:s3cret@db.example:5432/bossa")
    shown = config.masked(config.load(DatabaseSettings))
    assert "s3cret" not in str(shown)
    assert shown["database_url"] == "***"


def test_cli_bad_setting_exits_2_naming_it() -> None:
    result = bossa("serve", env={"BOSSA_API_PORT": "not-a-port"})
    assert result.returncode == 2
    assert "BOSSA_API_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_help_lists_groups() -> None:
    result = bossa("--help")
    assert result.returncode == 0
    for group in ("db", "config", "journal", "serve", "demo"):
        assert group in result.stdout


def test_config_show_masks_secrets() -> None:
    result = bossa(
        "config",
        "show",
        "--json",
        env={"BOSSA_DATABASE_URL": "postgresql://u:topsecret@h/db"},
    )
    assert result.returncode == 0, result.stderr
    assert "topsecret" not in result.stdout
    assert '"api"' in result.stdout


def test_cli_user_errors_exit_2(db_url: str) -> None:
    env = {"BOSSA_DATABASE_URL": db_url}
    missing = bossa("journal", "show", "424242", env=env)
    assert missing.returncode == 2
    assert "no journal entry 424242" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad_json = bossa("journal", "enqueue", "lane", "kind", "{not json", env=env)
    assert bad_json.returncode == 2
    assert "payload: is not JSON" in bad_json.stderr
    empty_key = bossa("journal", "enqueue", "lane", "kind", "{}", "--key", "", env=env)
    assert empty_key.returncode == 2
    assert "entry.key: must not be empty" in empty_key.stderr
    ok = bossa("journal", "enqueue", "lane", "kind", '{"a": 1}', "--key", "SA-1", env=env)
    assert ok.returncode == 0, ok.stderr
    assert "enqueued" in ok.stdout


def test_unmigrated_external_database_is_refused(empty_db_url: str) -> None:
    result = bossa("journal", "stats", env={"BOSSA_DATABASE_URL": empty_db_url})
    assert result.returncode == 2
    assert "bossa db migrate" in result.stderr
