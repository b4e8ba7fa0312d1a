"""SIP intake per RFC 3261 with SIPp (UDP and TCP) and raw datagrams: retransmissions are
one missed call, an INVITE without a callee or with a number that is not E.164 gets 400,
malformed and fuzzed messages are dropped (logged, counted) and disturb nothing else."""

from __future__ import annotations

import asyncio
import random
import socket
from pathlib import Path

import psycopg
import pytest

from bossa.alerts import metrics, service
from tests.alerts.conftest import Smsc, alerts_settings, daemon_on, fetch, run_sipp

pytestmark = pytest.mark.slow

CALLEE = "8613800000003"


def _invite(port: int, *, callee: str | None, caller: str = "+8613900000003", branch: str) -> bytes:
    diversion = f"Diversion: <sip:{callee}@ims>;reason=user-busy\r\n" if callee else ""
    return (
        f"INVITE sip:alerts@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch={branch}\r\n"
        f"From: <sip:{caller}@core>;tag=1\r\n"
        f"To: <sip:{callee or 'nobody'}@ims>\r\n"
        f"Call-ID: {branch}@core\r\nCSeq: 1 INVITE\r\n"
        f"{diversion}Content-Length: 0\r\n\r\n"
    ).encode()


def _ask(port: int, payload: bytes, *, expect: bool = True) -> list[str]:
    """Send one datagram; the status lines of what comes back within 0.5 s."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5 if not expect else 5.0)
        sock.sendto(payload, ("127.0.0.1", port))
        lines = []
        try:
            while True:
                data, _ = sock.recvfrom(65535)
                lines.append(data.split(b"\r\n", 1)[0].decode())
                if not lines[-1].startswith("SIP/2.0 1"):
                    break
        except TimeoutError:
            pass
    if expect:
        assert lines, "no answer"
    return lines


async def test_tcp_and_retransmissions(db_url: str, smsc: Smsc, tmp_path: Path) -> None:
    settings = alerts_settings(smsc, tmp_path / "spool")
    async with daemon_on(db_url, settings) as daemon:
        await service.register(daemon.pool, CALLEE, "en", actor="test")
        calls = [(f"86139000{n:05d}", CALLEE, "user-busy") for n in range(5)]
        tcp = await run_sipp(settings.sip_port, calls, transport="t1", folder=tmp_path)
        assert tcp.returncode == 0, tcp.stdout[-2000:]
        again = [(f"86139001{n:05d}", CALLEE, "user-busy") for n in range(5)]
        udp = await run_sipp(settings.sip_port, again, scenario="retransmit.xml", folder=tmp_path)
        assert udp.returncode == 0, udp.stdout[-2000:]
        rows = await fetch(daemon.pool, "select via, caller from alerts.missed_calls")
        assert len(rows) == 10  # the retransmitted INVITEs recorded once each
        sent = await smsc.wait_messages(10)
        assert len(sent) == 10


async def test_bad_input_is_answered_or_dropped(db_url: str, smsc: Smsc, tmp_path: Path) -> None:
    settings = alerts_settings(smsc, tmp_path / "spool")
    port = settings.sip_port
    async with daemon_on(db_url, settings) as daemon:
        no_callee = await asyncio.to_thread(
            _ask, port, _invite(port, callee=None, branch="z9hG4bKa1")
        )
        assert no_callee[-1].startswith("SIP/2.0 400")
        not_e164 = await asyncio.to_thread(
            _ask, port, _invite(port, callee="sip:0138", branch="z9hG4bKa2")
        )
        assert not_e164[-1].startswith("SIP/2.0 400")
        anonymous = await asyncio.to_thread(
            _ask, port, _invite(port, callee=CALLEE, caller="anonymous", branch="z9hG4bKa3")
        )
        assert anonymous[-1].startswith("SIP/2.0 400")

        # Fuzzed: a valid INVITE with random bytes flipped, truncated or duplicated.
        rng = random.Random(15)
        template = _invite(port, callee=CALLEE, branch="z9hG4bKfuzz")
        before = metrics.INTAKE_REJECTED.labels("malformed")._value.get()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as noise:
            for n in range(300):
                data = bytearray(template.replace(b"fuzz", f"f{n}".encode()))
                for _ in range(rng.randint(1, 8)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
                if n % 3 == 0:
                    data = data[: rng.randrange(len(data))]
                noise.sendto(bytes(data), ("127.0.0.1", port))
                if n % 50 == 0:
                    await asyncio.sleep(0.05)  # let the server read: a full buffer drops
            await asyncio.sleep(0.5)
        assert metrics.INTAKE_REJECTED.labels("malformed")._value.get() > before

        # Still serving: a good call after the noise is recorded and answered 486, and the
        # same INVITE again after the answer gets the same answer, not a second record.
        invite = _invite(port, callee=CALLEE, branch="z9hG4bKok")
        good = await asyncio.to_thread(_ask, port, invite)
        assert good[-1].startswith("SIP/2.0 486")
        again = await asyncio.to_thread(_ask, port, invite)
        assert again[-1] == good[-1]
        rows = await fetch(
            daemon.pool,
            "select count(*) as n from alerts.missed_calls where call_ref like %s",
            "z9hG4bKok%",
        )
        assert rows[0]["n"] == 1


@pytest.mark.fault
async def test_a_failed_transaction_spools_and_replays_once(
    db_url: str, smsc: Smsc, tmp_path: Path
) -> None:
    """The intake's transaction times out (a lock) while the monitor still says up: the
    call goes to the spool, is answered, replayed at once and told once (message 2, not a
    message 1 that would double it)."""
    settings = alerts_settings(smsc, tmp_path / "spool")
    port = settings.sip_port
    async with daemon_on(db_url, settings) as daemon:
        await service.register(daemon.pool, CALLEE, "en", actor="test")
        async with await psycopg.AsyncConnection.connect(db_url) as admin:
            # The intake's insert waits on this lock past its 1 s timeout: its outcome
            # is unknown to the daemon, while the monitor (select 1) still says up.
            await admin.execute("lock table alerts.missed_calls in access exclusive mode")
            invite = _invite(port, callee=CALLEE, branch="z9hG4bKbreak")
            answered = await asyncio.to_thread(_ask, port, invite)
            assert answered[-1].startswith("SIP/2.0 486")
            # Spooled: in the active file, or already in a sealed one, as the replay
            # seals the active file at once and then waits on the lock.
            spooled = sum(path.stat().st_size for path in (tmp_path / "spool").iterdir())
            assert spooled > 0
            await asyncio.sleep(0.5)
            await admin.rollback()
        sent = await smsc.wait_messages(1)
        await asyncio.sleep(1.0)
        assert len(smsc.messages()) == 1
        assert sent[0]["destination"] == CALLEE
        rows = await fetch(daemon.pool, "select notice_id from alerts.missed_calls")
        assert len(rows) == 1  # whether the timed-out insert committed or the replay did
        assert rows[0]["notice_id"] is not None
        notices = await fetch(daemon.pool, "select kind from alerts.notices")
        assert [n["kind"] for n in notices] == [2]
        assert not list((tmp_path / "spool").glob("*.sealed"))


def test_an_ack_is_matched_without_the_parser() -> None:
    """The fast ACK path gives the very key the parser does, or none (then the parser
    decides): never another transaction's."""
    from sipmessage import Message

    from bossa.alerts.adapters.sip import _fast_ack_key, _transaction_key

    plain = (
        b"ACK sip:alerts@127.0.0.1:5060 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-123-7;rport\r\n"
        b"From: <sip:+8613900000001@127.0.0.1>;tag=1\r\nTo: <sip:+8613800000001@x>;tag=2\r\n"
        b"Call-ID: c1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    )
    key = _fast_ack_key(plain)
    assert key is not None
    assert key == _transaction_key(Message.parse(plain))  # type: ignore[arg-type]
    no_port = plain.replace(b"127.0.0.1:5061;", b"Host.Example;")
    assert _fast_ack_key(no_port) == _transaction_key(Message.parse(no_port))  # type: ignore[arg-type]
    two_vias = plain.replace(b"Via:", b"Via: SIP/2.0/UDP p.example;branch=z9hG4bKp\r\nVia:", 1)
    assert _fast_ack_key(two_vias) is None
    old_branch = plain.replace(b"z9hG4bK-123-7", b"1234")
    assert _fast_ack_key(old_branch) is None
    assert _fast_ack_key(plain.replace(b"1 ACK", b"1 INVITE")) is None
