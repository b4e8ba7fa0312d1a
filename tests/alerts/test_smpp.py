"""The ESME against the node-smpp SMSC: bind password, the rate limit answered with
ESME_RTHROTTLED (paused, nothing reordered, nothing lost), receipts before responses, and
the SMSC killed and restarted mid-stream (every message submitted once)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bossa.alerts.adapters.smpp import ESME_ROK, Esme, EsmeConfig, Inbound
from bossa.alerts.models import encode_sms
from tests.alerts.conftest import SMSC_PASSWORD, Smsc
from tests.support import free_port

pytestmark = pytest.mark.slow


def _config(smsc: Smsc, **overrides: object) -> EsmeConfig:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": smsc.port,
        "system_id": "bossa",
        "password": SMSC_PASSWORD,
        "source_addr": "10086",
        "binds": 2,
        "window": 10,
        "rate_per_s": 2000,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.3,
        "throttle_pause_s": 0.02,
        "response_timeout_s": 2,
        **overrides,
    }
    return EsmeConfig(**values)  # type: ignore[arg-type]


class Receipts:
    def __init__(self) -> None:
        self.tags: list[int | None] = []

    async def __call__(self, message: Inbound, tag: int | None) -> int:
        if message.is_receipt:
            self.tags.append(tag)
        return ESME_ROK


async def test_wrong_password_never_binds(smsc: Smsc) -> None:
    esme = Esme(_config(smsc, password="wrong"), Receipts())
    await esme.start()
    try:
        assert not await esme.wait_bound(1.0)
    finally:
        await esme.close()


@pytest.mark.parametrize("receipts", ["after", "first"])
async def test_throttled_submits_pause_and_keep_order(tmp_path: Path, receipts: str) -> None:
    smsc = Smsc(
        free_port(),
        free_port(),
        tmp_path / "smsc.jsonl",
        {"rate": 10, "receipts": receipts, "log": ""},
    )
    smsc.start()
    inbound = Receipts()
    esme = Esme(_config(smsc, binds=1, window=1), inbound)
    try:
        await esme.start()
        assert await esme.wait_bound(5)
        count = 30  # faster than the SMSC allows (10 per second): it throttles
        ids = await asyncio.gather(
            *(
                esme.submit("8613800000001", encode_sms(f"m{n}", n), reference=f"t{n}", tag=n)
                for n in range(count)
            )
        )
        sent = smsc.messages()
        assert [m["text"] for m in sent] == [f"m{n}" for n in range(count)]  # order kept
        assert len({i[0] for i in ids}) == count
        assert smsc.get("/health")["throttled"] > 0
        for _ in range(100):
            if len(inbound.tags) == count:
                break
            await asyncio.sleep(0.05)
        assert sorted(t for t in inbound.tags if t is not None) == list(range(count))
    finally:
        await esme.close()
        smsc.kill()


async def test_smsc_killed_mid_stream_submits_each_once(tmp_path: Path) -> None:
    smsc = Smsc(free_port(), free_port(), tmp_path / "smsc.jsonl", {"respondDelayMs": 20})
    smsc.start()
    esme = Esme(_config(smsc), Receipts())
    try:
        await esme.start()
        assert await esme.wait_bound(5)
        count = 200
        submits = asyncio.gather(
            *(
                esme.submit(f"86138{n:08d}", encode_sms(f"k{n}", n), reference=f"k{n}", tag=n)
                for n in range(count)
            )
        )
        await smsc.wait_messages(40)
        smsc.kill()
        await asyncio.sleep(0.3)
        smsc.start()
        await asyncio.wait_for(submits, 30)
        sent = smsc.messages()
        texts = [m["text"] for m in sent]
        assert sorted(texts) == sorted(f"k{n}" for n in range(count))  # all, none twice
    finally:
        await esme.close()
        smsc.kill()
