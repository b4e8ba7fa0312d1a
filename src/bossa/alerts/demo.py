"""The alerts chapter of `bossa demo`: missed calls while the demo's PostgreSQL is
stopped, their SMS sent all the same, and the records reconciled when it returns (M1-M3).

Everything in it is real: the alerts daemon runs in the tour's process on the tour's
database, with its SIP intake on a free UDP port of 127.0.0.1 and its own pool; the
demo's embedded PostgreSQL is stopped (`pg_ctl stop -m fast`) and started again; the
SMS centre is the tests' node-smpp SMSC in its own process.

Peers, and how the chapter finds them:

- The SMS centre: `tests/alerts/smsc/smsc.js` of the source checkout bossa runs from
  (beside `src/`), with its npm packages installed by `scripts/system-deps`, started with
  the `node` on PATH. Without node or that folder the chapter says so and is skipped:
  a demo that invented an SMSC in its own process would show nothing.
- The core network: SIPp (`sipp` on PATH, Debian `sip-tester`) playing the tests'
  scenario `tests/alerts/sipp/diverted.xml`, one process per batch of calls; without
  SIPp, a small SIP client here (UDP, RFC 3261 INVITE with Timer A retransmission, then
  the ACK) sends the same diverted INVITE to the same intake socket. The chapter says
  which one it used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from bossa.alerts import service
from bossa.alerts.lanes import AlertsDaemon
from bossa.alerts.settings import AlertsSettings
from bossa.db import EmbeddedPostgres, Pool
from bossa.journal import Journal, JournalSettings
from bossa.runtime import Runtime

__all__ = ["SipClient", "chapter", "find_peers"]

_CHECKOUT = Path(__file__).resolve().parents[3]
#: The bind password of the chapter's own throw-away SMSC, not a secret of anyone's.
SMSC_PASSWORD = "demo-pw"  # noqa: S105
#: Calls from one caller to one callee within this many seconds become one SMS.
WINDOW_S = 2.0

SipClient = Literal["sipp", "bossa"]

# The story's numbers (E.164 digits).
LI = "8613800000001"  # registered, English
WANG = "8613800000002"  # registered, Chinese
TRIAL = "8613700000001"  # not registered, in the trial range 86137
OTHER = "8613600000001"  # not registered, no trial


@dataclass(frozen=True)
class Peers:
    smsc: Path | None
    sipp_scenario: Path | None


def find_peers(checkout: Path = _CHECKOUT) -> Peers:
    smsc = checkout / "tests" / "alerts" / "smsc"
    scenario = checkout / "tests" / "alerts" / "sipp" / "diverted.xml"
    return Peers(
        smsc if shutil.which("node") and (smsc / "node_modules" / "smpp").is_dir() else None,
        scenario if shutil.which("sipp") and scenario.is_file() else None,
    )


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Smsc:
    """The node-smpp SMSC in its own process, on free ports."""

    def __init__(self, folder: Path, log: Path) -> None:
        self.folder = folder
        self.port, self.control = _free_port(), _free_port()
        config = {
            "port": self.port,
            "controlPort": self.control,
            "systemId": "bossa",
            "password": SMSC_PASSWORD,
            "log": str(log),
        }
        self.process = subprocess.Popen(
            [shutil.which("node") or "node", str(folder / "smsc.js"), json.dumps(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def messages(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.control}/messages", timeout=5) as r:
            return list(json.loads(r.read()))

    def wait_ready(self, timeout_s: float = 15) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                self.messages()
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("the node-smpp SMSC did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@contextlib.contextmanager
def _smsc(folder: Path, work: Path) -> Iterator[_Smsc]:
    smsc = _Smsc(folder, work / "smsc-accepted.jsonl")
    try:
        smsc.wait_ready()
        yield smsc
    finally:
        smsc.stop()


# -- the core network ------------------------------------------------------------------


def _invite(port: int, local: int, caller: str, callee: str, reason: str) -> tuple[bytes, str]:
    branch = f"z9hG4bK-demo-{uuid.uuid4().hex[:12]}"
    call_id = f"{uuid.uuid4().hex}@127.0.0.1"
    tag = uuid.uuid4().hex[:8]
    common = (
        f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch={branch}\r\n"
        f"From: <sip:+{caller}@127.0.0.1>;tag={tag}\r\n"
        f"To: <sip:+{callee}@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
    )
    invite = (
        f"INVITE sip:alerts@127.0.0.1:{port} SIP/2.0\r\n{common}CSeq: 1 INVITE\r\n"
        f"Contact: <sip:+{caller}@127.0.0.1:{local}>\r\nMax-Forwards: 70\r\n"
        f"P-Asserted-Identity: <tel:+{caller}>\r\n"
        f"Diversion: <sip:+{callee}@ims.example;user=phone>;reason={reason};counter=1\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    return invite.encode(), common


async def _bossa_sip_call(port: int, caller: str, callee: str, reason: str) -> int:
    """One diverted call over UDP as a UAC would make it: INVITE, retransmitted on Timer A
    (0.5 s, doubling) until a response, then the ACK for the final answer (RFC 3261
    17.1.1); returns the final status (0 if none came in 8 s)."""
    loop = asyncio.get_running_loop()
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    class _Protocol(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            answers.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(
        _Protocol, local_addr=("127.0.0.1", 0), remote_addr=("127.0.0.1", port)
    )
    try:
        local = int(transport.get_extra_info("sockname")[1])
        invite, common = _invite(port, local, caller, callee, reason)
        interval, deadline = 0.5, time.monotonic() + 8
        transport.sendto(invite)
        while time.monotonic() < deadline:
            try:
                data = await asyncio.wait_for(answers.get(), interval)
            except TimeoutError:
                transport.sendto(invite)
                interval = min(interval * 2, 4.0)
                continue
            status_line, _, rest = data.decode(errors="replace").partition("\r\n")
            code = int(status_line.split()[1])
            if code < 200:
                interval = 4.0  # a provisional answer stops Timer A's doubling
                continue
            to = next(
                (h for h in rest.split("\r\n") if h.lower().startswith("to:")),
                f"To: <sip:+{callee}@127.0.0.1>",
            )
            ack = (
                f"ACK sip:alerts@127.0.0.1:{port} SIP/2.0\r\n"
                + "".join(line + "\r\n" for line in common.split("\r\n")[:-1] if line[:3] != "To:")
                + f"{to}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            )
            transport.sendto(ack.encode())
            return code
        return 0
    finally:
        transport.close()


async def _calls(
    client: SipClient,
    peers: Peers,
    work: Path,
    port: int,
    calls: list[tuple[str, str, str]],
) -> str:
    """Send the calls (caller, callee, reason) in order; a line saying how they were answered."""
    if client == "bossa":
        codes = [await _bossa_sip_call(port, *call) for call in calls]
        return "answers " + ", ".join(str(code) for code in codes)
    assert peers.sipp_scenario is not None
    inject = work / f"calls-{time.monotonic_ns()}.csv"
    inject.write_text("SEQUENTIAL\n" + "".join(f"{a};{b};{r};\n" for a, b, r in calls))
    done = await asyncio.to_thread(
        subprocess.run,
        [
            "sipp",
            f"127.0.0.1:{port}",
            "-sf",
            str(peers.sipp_scenario),
            "-inf",
            str(inject),
            "-m",
            str(len(calls)),
            "-r",
            "20",
            "-t",
            "u1",
            "-i",
            "127.0.0.1",
            "-p",
            str(_free_port(socket.SOCK_DGRAM)),
            "-timeout",
            "20s",
            "-timeout_error",
            "-nostdin",
        ],
        capture_output=True,
        text=True,
        cwd=work,
        timeout=40,
        check=False,
    )
    counts = {}
    for line in done.stdout.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if cells and cells[0] in ("Successful call", "Failed call") and len(cells) > 2:
            counts[cells[0].split()[0].lower()] = cells[2]
    return (
        f"SIPp exit {done.returncode}: {counts.get('successful', '?')} answered 486/480 and "
        f"ACKed, {counts.get('failed', '?')} failed"
    )


# -- the chapter -----------------------------------------------------------------------


async def _until(predicate: Any, timeout_s: float, step: float = 0.05) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if await predicate():
            return time.monotonic() - started
        await asyncio.sleep(step)
    raise TimeoutError


@contextlib.asynccontextmanager
async def _daemon(url: str, settings: AlertsSettings) -> AsyncIterator[AlertsDaemon]:
    # As `bossa alerts serve` opens it: a pool that does not wait for its server and
    # reconnects for as long as the outage lasts.
    pool: Pool = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=4,
        name="bossa-demo-alerts",
        open=False,
        kwargs={"row_factory": dict_row, "autocommit": True},
        reconnect_timeout=3600,
    )
    await pool.open(wait=True, timeout=30)
    try:
        journal = Journal(pool, JournalSettings(poll_interval_s=0.2), actor="demo")
        daemon = AlertsDaemon(url, pool, journal, settings)
        await daemon.start()
        try:
            if not await daemon.esme.wait_bound(10):
                raise RuntimeError("bossa could not bind to the SMSC")
            yield daemon
        finally:
            await daemon.close()
    finally:
        await pool.close()


def _table(out: Console, rows: list[dict[str, Any]], columns: list[str]) -> None:
    # On the chapter's console (not the terminal's), so that a test reads it too.
    view = Table(*columns)
    for row in rows:
        view.add_row(*(str(row[c]) for c in columns))
    out.print(view)


def _sms(out: Console, sent: list[dict[str, Any]]) -> None:
    _table(out, [{"to": m["destination"], "SMS": m["text"]} for m in sent], ["to", "SMS"])


@contextlib.contextmanager
def _quiet_pool() -> Iterator[None]:
    """psycopg's pool warns of every failed reconnection: during an outage on purpose the
    chapter tells the story itself."""
    logger = logging.getLogger("psycopg")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


async def chapter(
    out: Console,
    runtime: Runtime,
    server: EmbeddedPostgres,
    *,
    peers: Peers | None = None,
    client: SipClient | None = None,
) -> None:
    """The chapter; `server` is the embedded PostgreSQL behind `runtime`, stopped and
    started again here. `client` forces the SIP client (default: SIPp if installed)."""
    peers = peers or find_peers()
    if peers.smsc is None:
        out.print(
            "The chapter needs the node-smpp SMSC of a source checkout "
            "(tests/alerts/smsc, `node` on PATH, `scripts/system-deps`): skipped."
        )
        return
    client = client or ("sipp" if peers.sipp_scenario is not None else "bossa")
    with tempfile.TemporaryDirectory(prefix="bossa-demo-alerts-") as folder:
        work = Path(folder)
        with _smsc(peers.smsc, work) as smsc, _quiet_pool():
            await _tour(out, runtime, server, peers, client, work, smsc)


async def _tour(
    out: Console,
    runtime: Runtime,
    server: EmbeddedPostgres,
    peers: Peers,
    client: SipClient,
    work: Path,
    smsc: _Smsc,
) -> None:
    pool = runtime.pool
    for msisdn, lang in ((LI, "en"), (WANG, "zh")):
        await service.register(pool, msisdn, lang, actor="demo")
    await service.add_trial_range(pool, "86137", actor="demo")
    await service.set_trial_quota(pool, 100, actor="demo")
    out.print(
        f"subscribers {LI} (en) and {WANG} (zh); trial range 86137; {OTHER} neither. "
        f"Calls from one caller within {WINDOW_S:g} s become one SMS."
    )
    sip_port = _free_port(socket.SOCK_DGRAM)
    settings = AlertsSettings(
        sip_host="127.0.0.1",
        sip_port=sip_port,
        sip_transports=["udp"],
        smpp_port=smsc.port,
        smpp_password=SecretStr(SMSC_PASSWORD),
        window_s=WINDOW_S,
        spool_dir=work / "spool",
        monitor_interval_s=0.1,
        registry_refresh_s=1,
        status_port=0,
    )
    sip_name = (
        f"SIPp ({shutil.which('sipp')}, scenario {peers.sipp_scenario})"
        if client == "sipp"
        else "bossa's own SIP UDP client"
        + ("" if peers.sipp_scenario else " (SIPp is not installed)")
    )
    out.print(
        f"SMS centre: node-smpp in its own process (pid {smsc.process.pid}, "
        f"{smsc.folder / 'smsc.js'}), port {smsc.port}"
    )
    out.print(f"core network: {sip_name} -> bossa's SIP intake udp 127.0.0.1:{sip_port}")
    url = runtime.url
    async with _daemon(url, settings) as daemon:
        registry = settings.spool_dir / "registry.json"

        async def copied() -> bool:
            return registry.exists() and LI in json.loads(registry.read_text())

        await _until(copied, 10)
        out.print(f"database up; local registration copy written: {registry.name}")

        async def sms(count: int) -> list[dict[str, Any]]:
            async def enough() -> bool:
                return len(await asyncio.to_thread(smsc.messages)) >= count

            with contextlib.suppress(TimeoutError):
                await _until(enough, 20, 0.1)
            return await asyncio.to_thread(smsc.messages)

        # -- database up: messages 2 and 3
        answered = await _calls(
            client,
            peers,
            work,
            sip_port,
            [
                ("8613900000001", LI, "user-busy"),
                ("8613900000001", LI, "user-busy"),
                ("8613900000002", TRIAL, "no-answer"),
            ],
        )
        out.print(f"3 calls with the database up: {answered}")
        sent = await sms(2)
        _sms(out, sent)

        # -- the outage
        pinned = (server.run_dir / "pinned").exists()
        out.print(f"[bold]PostgreSQL stops[/bold] (pg_ctl stop -m fast, {server.pgdata}).")
        stopped_at = time.monotonic()
        await asyncio.to_thread(server.stop)

        async def down() -> bool:
            return not daemon.monitor.up

        await _until(down, 10)
        out.print(
            f"pg_ctl stop took {time.monotonic() - stopped_at:.2f}s; bossa's monitor said down "
            f"{daemon.monitor.changed_at - stopped_at:.2f}s after it began"
        )

        def connect() -> None:
            psycopg.connect(url, connect_timeout=2).close()

        try:
            await asyncio.to_thread(connect)
        except psycopg.OperationalError as exc:
            out.print(f"  (a client connecting now: {str(exc).splitlines()[0][:160]})")
        outage = [
            ("8613900000003", LI, "user-busy"),
            ("8613900000003", LI, "no-answer"),
            ("8613900000003", LI, "user-busy"),
            ("8613900000004", WANG, "unreachable"),
            ("8613900000005", TRIAL, "no-answer"),
            ("8613900000006", OTHER, "no-answer"),
        ]
        answered = await _calls(client, peers, work, sip_port, outage)
        out.print(f"6 calls while it is down: {answered}")
        spooled = [
            json.loads(line)
            for line in (settings.spool_dir / "spool.jsonl").read_text().splitlines()
        ]
        out.print(
            f"spool {settings.spool_dir / 'spool.jsonl'}: "
            f"{sum(r['t'] == 'call' for r in spooled)} calls, each fsynced before its answer"
        )
        sent = await sms(len(sent) + 2)
        out.print("Message 1 to the registered callees, from the local copy, no database:")
        _sms(out, sent[-2:])
        out.print(
            f"{TRIAL} and {OTHER}: no SMS yet (whether to offer the trial needs the database)"
        )

        # -- back
        out.print("[bold]PostgreSQL is back.[/bold] The spool is written to it in one transaction.")
        before = len(sent)
        await asyncio.to_thread(server.start, pin=pinned)
        restarted_at = time.monotonic()  # pg_ctl start -w returns once it accepts connections

        async def up() -> bool:
            return daemon.monitor.up

        await _until(up, 10)
        out.print(
            f"bossa's monitor said up {max(0.0, daemon.monitor.changed_at - restarted_at):.2f}s "
            "after the server accepted connections"
        )

        async def reconciled() -> bool:
            with contextlib.suppress(*service.DATABASE_ERRORS):
                async with pool.connection() as conn:
                    row = await (
                        await conn.execute("select count(*) as n from alerts.missed_calls")
                    ).fetchone()
                    return bool(row and row["n"] == 9)
            return False

        await _until(reconciled, 20, 0.1)
        # The trial callee's spooled call is decided with the database now (message 3).
        after = await sms(before + 1)
        async with pool.connection() as conn:
            rows = await (
                await conn.execute(
                    "select c.callee, c.caller, count(*) as calls,"
                    " count(distinct c.id) as distinct_ids, bool_and(c.spooled) as spooled,"
                    " max(n.kind) as message"
                    " from alerts.missed_calls c left join alerts.notices n on n.id = c.notice_id"
                    " group by c.callee, c.caller order by bool_and(c.spooled), c.callee"
                )
            ).fetchall()
        out.print("In PostgreSQL now, each call once (id unique), linked to the SMS that told it:")
        _table(
            out,
            [
                {
                    "callee": r["callee"],
                    "caller": r["caller"],
                    "calls": r["calls"],
                    "spooled": "yes" if r["spooled"] else "no",
                    "once": "yes" if r["calls"] == r["distinct_ids"] else "NO",
                    "message": r["message"] if r["message"] is not None else "-",
                }
                for r in rows
            ],
            ["callee", "caller", "calls", "spooled", "once", "message"],
        )
        for message in after[before:]:
            out.print(f"after the replay, to {message['destination']}: {message['text']}")
        leftover = list(settings.spool_dir.glob("*.sealed"))
        out.print(
            f"spool after the replay: {(settings.spool_dir / 'spool.jsonl').stat().st_size} bytes, "
            f"{len(leftover)} sealed files; SMS in all: {len(after)}, "
            f"duplicates: {len(after) - len({m['reference'] for m in after})}"
        )
    # The tour's own pool still holds connections to the server that was stopped.
    await runtime.pool.check()
