"""The alerts chapter of `bossa demo`, run whole on a PostgreSQL of the test's own (the
chapter stops and starts it): message 1 during the outage, every call in the database
once afterwards, with SIPp and with bossa's own SIP client as the core network."""

from __future__ import annotations

import io
import shutil

import pytest
from rich.console import Console

from bossa.alerts import demo
from bossa.db import open_pool
from bossa.db.migrations import migrate
from bossa.journal import Journal, JournalSettings
from bossa.runtime import Runtime
from tests.support import own_postgres

pytestmark = [pytest.mark.slow, pytest.mark.fault]


@pytest.mark.parametrize("client", ["sipp", "bossa"])
async def test_the_chapter_alerts_through_an_outage(client: demo.SipClient) -> None:
    peers = demo.find_peers()
    assert peers.smsc is not None  # conftest skips the module without node and its packages
    if client == "sipp" and shutil.which("sipp") is None:
        pytest.skip("SIPp is not installed (scripts/system-deps)")
    buffer = io.StringIO()
    with own_postgres() as server:
        url = server.url()
        migrate(url)
        async with open_pool(url, max_size=4) as pool:
            runtime = Runtime.around(url, Journal(pool, JournalSettings()), embedded=True)
            try:
                await demo.chapter(Console(file=buffer, width=250), runtime, server, client=client)
            finally:
                await runtime.deliverer.close()
            # The tour's pool works again after the restart.
            async with pool.connection() as conn:
                assert await (await conn.execute("select 1 as one")).fetchone() == {"one": 1}
        assert server.status().running
    text = buffer.getvalue()
    print(text)
    assert ("SIPp" if client == "sipp" else "bossa's own SIP UDP client") in text
    assert "called you 2 time(s)" in text  # message 2, the window while up
    assert "PostgreSQL stops" in text
    assert "monitor said down" in text
    assert "called you 3 time(s)" in text  # message 1 from the local copy, during the outage
    assert "漏话提醒：+8613900000004" in text  # in Chinese, the copy's language for WANG
    assert "6 calls, each fsynced" in text
    assert "NO" not in text  # every call once
    assert text.count("│ yes     │ yes") == 4  # the outage's calls, spooled then replayed
    assert "after the replay, to 8613700000001: You missed 1 call(s)" in text  # message 3
    assert "duplicates: 0" in text
    assert "0 bytes, 0 sealed files" in text
