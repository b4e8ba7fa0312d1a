"""Secrets stay secret at the foundation: a database URL's password is masked in every
error, listing and command output, including when the URL is malformed or its server is
away; the leak check of tests/conftest.py is itself checked."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bossa.db import masked_url
from tests.support import TEST_PASSWORDS

PASSWORD = TEST_PASSWORDS[0]


def bossa(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BOSSA_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "bossa.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize(
    "url",
    [
        # Port 1: nothing listens there, the connection is refused at once.
        f"postgresql://bossa:{PASSWORD}@127.0.0.1:1/bossa",
        f"host=127.0.0.1 port=1 user=bossa password={PASSWORD}",
        f"not a url {PASSWORD}",
        f"postgresql://bossa:{PASSWORD}@[::1/broken",
    ],
    ids=["unreachable-url", "unreachable-conninfo", "not-a-url", "broken-url"],
)
def test_a_bad_or_unreachable_database_url_is_one_masked_line(url: str) -> None:
    for args in (("journal", "list"), ("db", "status"), ("config", "show"), ("db", "url")):
        result = bossa(*args, url=url)
        output = result.stdout + result.stderr
        assert PASSWORD not in output, (args, output)
        assert "Traceback" not in output, (args, output)
        if result.returncode != 0:
            assert result.returncode == 2, (args, output)
            assert output.startswith("error: BOSSA_DATABASE_URL"), (args, output)


def test_db_url_reveals_only_when_asked() -> None:
    url = f"postgresql://bossa:{PASSWORD}@127.0.0.1:5432/bossa"
    shown = bossa("db", "url", url=url)
    assert shown.stdout.strip() == "postgresql://bossa:***@127.0.0.1:5432/bossa"
    revealed = bossa("db", "url", "--reveal", url=url)
    # Built without the literal so that this test's own output holds no password.
    assert revealed.stdout.strip().split(":")[2].split("@")[0] == PASSWORD


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:1/x", "postgresql://u:***@h:1/x"),
        ("postgresql://h/x?password=zz&user=u", "postgresql://h/x?password=***&user=u"),
        ("host=h password='a b' user=u", "host=h password=*** user=u"),
        ("postgresql://u@h/x", "postgresql://u@h/x"),
    ],
)
def test_masked_url(url: str, shown: str) -> None:
    assert masked_url(url) == shown
