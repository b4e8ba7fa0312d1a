"""The partner chapter of `bossa demo`: the run goes through the open API with a partner
token, and its MDR file lands on the (asyncssh) SFTP server the chapter starts."""

from __future__ import annotations

import io

from rich.console import Console

from bossa.partners.demo import chapter
from bossa.runtime import Runtime


async def test_the_chapter_delivers_an_mdr_file(runtime: Runtime) -> None:
    buffer = io.StringIO()
    await chapter(Console(file=buffer, width=200), runtime)
    text = buffer.getvalue()
    assert "MDR files written [1], confirmed on SFTP [1]" in text
    assert "on the billing system's SFTP server: MDR_BOSSA_00000001.dat" in text
    assert "H|MDR|1|BOSSA|LEGACYBILL|00000001|" in text
    assert "T|3|0|0|90|0|" in text  # three runs at 30 a use; the refused one not billed
