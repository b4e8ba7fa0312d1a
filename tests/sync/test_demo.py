"""The sync and rating chapter of `bossa demo`, run whole on a database of the test's
own: a product bought while the pipeline is stopped rates the call that waited in the
inbox once the pipeline is restarted."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from bossa.customers import load_sample_operator
from bossa.db import open_pool
from bossa.journal import Journal, JournalSettings
from bossa.runtime import Runtime
from bossa.sync import demo

pytestmark = pytest.mark.anyio


async def test_the_chapter_rates_the_next_call_with_the_product_bought_while_down(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    buffer = io.StringIO()
    async with open_pool(db_url, max_size=6) as pool:
        await load_sample_operator(pool, actor="demo")
        runtime = Runtime.around(db_url, Journal(pool, JournalSettings()), embedded=True)
        try:
            await demo.chapter(Console(file=buffer, width=250), runtime)
        finally:
            await runtime.deliverer.close()
    text = buffer.getvalue() + capsys.readouterr().out  # the tables go to the terminal
    print(text)
    assert "The pipeline stops" in text
    assert "(1 READY)" in text  # the product change waited while the pipeline was down
    assert "to cdrs (min_events)" in text
    rows = [line for line in text.splitlines() if "call-" in line]
    assert len(rows) == 2
    assert "SOIP" in rows[0]
    assert "WIBRO" in rows[1]
    # SOIP's call is within its free minutes; WIBRO's is charged 5 minutes at its rates.
    assert rows[0].split()[-1] == "0"
    assert int(rows[1].split()[-1]) > 0
