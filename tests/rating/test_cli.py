"""`bossa rating` from the shell: a tariff from YAML, a subscription, an inbox of CDR
files rated once each (a repeat is skipped), bad input exits 2 naming the field."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bossa.customers import load_sample_operator
from bossa.db import open_pool

pytestmark = pytest.mark.anyio

TARIFF = """
product: SOIP
valid_from: 2026-01-01
increment: 60
min_charge: 10
zones:
  - {prefix: "82", zone: national, included: true}
  - {prefix: "1", zone: intl}
rates:
  national: {peak: 60, offpeak: 30, weekend: 20}
  intl: {peak: 600, offpeak: 600, weekend: 600}
allowance_seconds: 60
"""


def bossa(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bossa.cli", "rating", *args],
        env={**os.environ, "BOSSA_DATABASE_URL": db_url, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_tariff_subscription_and_inbox(db_url: str, tmp_path: Path) -> None:
    async with open_pool(db_url, max_size=2) as pool:
        await load_sample_operator(pool, actor="test")
    tariff = tmp_path / "soip.yaml"
    tariff.write_text(TARIFF)
    assert bossa(db_url, "tariff-add", str(tariff)).returncode == 0
    done = bossa(db_url, "subscribe", "821012340005", "A-1001", "SOIP", "--at", "2026-01-01")
    assert done.returncode == 0, done.stderr
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    body = "record_key,msisdn,destination,start,duration\n"
    (inbox / "one.csv").write_text(body + "a,821012340005,1555,2026-03-02 10:00:00,61\n")
    (inbox / "two.csv").write_text(body + "a,821012340005,1555,2026-03-02 10:00:00,61\n")
    result = bossa(db_url, "inbox", str(inbox), "--once", "--poll", "0.1")
    assert result.returncode == 0, result.stderr
    # 61 s in 60 s increments is 120 s of international at 600 a minute.
    assert "1 rated" in result.stdout
    assert "(rated before)" in result.stdout
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["one.csv", "two.csv"]


def test_bad_input_exits_2_naming_the_field(db_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(TARIFF.replace("increment: 60", "increment: 30"))
    result = bossa(db_url, "tariff-add", str(bad))
    assert result.returncode == 2
    assert "increment" in result.stderr
    result = bossa(db_url, "subscribe", "12ab", "A-1001", "SOIP", "--at", "2026-01-01")
    assert result.returncode == 2
    assert "msisdn" in result.stderr
    missing_rate = tmp_path / "missing.yaml"
    missing_rate.write_text(TARIFF.replace("  intl: {peak: 600, offpeak: 600, weekend: 600}\n", ""))
    result = bossa(db_url, "tariff-add", str(missing_rate))
    assert result.returncode == 2
    assert "intl" in result.stderr


async def test_recycle_rerate_and_billing_holds_from_the_shell(db_url: str, tmp_path: Path) -> None:
    async with open_pool(db_url, max_size=2) as pool:
        await load_sample_operator(pool, actor="test")
    tariff = tmp_path / "soip.yaml"
    tariff.write_text(TARIFF)
    assert bossa(db_url, "tariff-add", str(tariff)).returncode == 0
    body = "record_key,msisdn,destination,start,duration\n"
    cdrs = tmp_path / "a.csv"
    cdrs.write_text(body + "r1,821012340005,1555,2026-03-02 10:00:00,60\n")
    rated = bossa(db_url, "rate", str(cdrs))
    assert rated.returncode == 0, rated.stderr
    nothing = bossa(db_url, "recycle", "--reason", "unknown_account", "--fixed", "--json")
    assert '"taken": 0' in nothing.stdout, nothing.stderr
    assert bossa(db_url, "subscribe", "821012340005", "A-1001", "SOIP", "--at", "2026-01-01")
    recycled = bossa(db_url, "recycle", "--account", "A-1001")
    assert recycled.returncode == 0, recycled.stderr
    assert "1 rated (charge 600)" in recycled.stdout
    # Rerating the day gives the same charge and replaces the ledger row.
    again = bossa(db_url, "rerate", "--from", "2026-03-02", "--to", "2026-03-03")
    assert again.returncode == 0, again.stderr
    assert "charge 600 -> 600" in again.stdout
    assert "1 ledger rows replaced" in again.stdout
    bad = bossa(db_url, "rerate", "--from", "2026-03-02", "--to", "2026-03-0x")
    assert bad.returncode == 2
    assert "to" in bad.stderr
    # S14 by hand: held while billed, recycled once billing completes.
    assert bossa(db_url, "billing-start", "A-1001", "--run", "r-1").returncode == 0
    later = tmp_path / "b.csv"
    later.write_text(body + "r2,821012340005,1555,2026-03-02 11:00:00,60\n")
    held = bossa(db_url, "rate", str(later), "--json")
    assert '"suspended": 1' in held.stdout, held.stderr
    assert bossa(db_url, "billing-complete", "A-1001").returncode == 0
    fixed = bossa(db_url, "recycle", "--fixed")
    assert "1 rated (charge 600)" in fixed.stdout, fixed.stderr
