"""Missed calls per second from SIP intake to submit_sm accepted at the SMS centre, with
the database up and with it down, and the latency from the call's arrival to its SMS
accepted, in one run.

    .venv/bin/python -m bench.alerts.run [--quick] [--rate R] [--calls N] [--json FILE]
                                          [--no-results]

Starts a private durable PostgreSQL (fsync on), the test SMSC (node-smpp,
tests/alerts/smsc, without its fsynced log so that the peer's disk is not what is
measured), `bossa alerts serve` in its own process and SIPp in its own process sending
diverted INVITEs at the offered rate, each to a distinct registered callee (window 0: one
SMS per call). Phase "up": the database answers, each call is committed before its SIP
answer and its SMS goes through the journal lane. Phase "down": the server is stopped,
each call is fsynced into the spool before its answer and message 1 goes straight out;
then the server is started and the spool replayed (checked: every call once).

Latency is per call: the SMSC's accept time minus the call's `called_at` (stamped by
bossa when the INVITE was parsed), both on this machine's clock. Prints offered vs
achieved rates, p50/p99/max, the targets (>= 1,000/s, p99 <= 200 ms) and the ratio to them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from bench.common import Cpu, append_section, base_parser, fmt, free_port, git_ref, pct  # noqa: E402
from bossa.db import EmbeddedPostgres, open_pool  # noqa: E402
from bossa.db.migrations import migrate  # noqa: E402

SMSC_DIR = ROOT / "tests" / "alerts" / "smsc"
SIPP_DIR = ROOT / "tests" / "alerts" / "sipp"
TARGET_RATE = 1000.0
TARGET_P99_MS = 200.0


_TICK = os.sysconf("SC_CLK_TCK")
_PROFILER = """
import cProfile, signal, sys
from bossa.cli import main
prefix = sys.argv[1]
state = {"n": 0, "prof": cProfile.Profile()}
def dump(*_):
    state["prof"].disable()
    state["prof"].dump_stats(f"{prefix}-{state['n']}.prof")
    state["n"] += 1
    state["prof"] = cProfile.Profile()
    state["prof"].enable()
signal.signal(signal.SIGUSR1, dump)
sys.argv = ["bossa", "alerts", "serve"]
state["prof"].enable()
try:
    main()
except SystemExit:
    pass
dump()
"""


def _stat(pid: int) -> tuple[int, float]:
    """(parent pid, CPU seconds of the process and of its reaped children)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[1]), sum(int(x) for x in fields[11:15]) / _TICK


def tree_cpu(root: int) -> float:
    """CPU seconds of a process and all its descendants, living or reaped (PostgreSQL's
    backends come and go)."""
    parents: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = _stat(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    total, frontier = 0.0, {root}
    while frontier:
        total += sum(parents[p][1] for p in frontier if p in parents)
        frontier = {p for p, (ppid, _) in parents.items() if ppid in frontier}
    return total


def _runqueue_wait(pid: int) -> float:
    """Seconds the process's main thread (bossa's event loop) has waited, runnable, for a
    CPU: what the machine's other tenants cost it."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return float("nan")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _print_profile(path: Path, title: str, top: int = 22) -> list[str]:
    """The profile's costliest functions by own time, and the cumulative time of the
    stages a call goes through."""
    import io
    import pstats

    buffer = io.StringIO()
    stats = pstats.Stats(str(path), stream=buffer)
    stats.sort_stats("tottime").print_stats(top)
    lines = [f"### profile of bossa, {title} (cProfile, own time)", *buffer.getvalue().splitlines()]
    print("\n".join(lines), flush=True)
    return lines


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.loads(r.read())


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"bench: timed out waiting for {what}")


def _settle(control: int, callees: set[str]) -> list[dict[str, Any]]:
    """The phase's SMS (to its callees) once each callee has one, or once none has come
    for 60 s (calls that SIPp gave up on were never answered, so never recorded)."""
    seen, since = -1, time.monotonic()
    while True:
        sent = [m for m in _get(control, "/messages") if m["destination"] in callees]
        if len(sent) >= len(callees) or time.monotonic() - since > 60:
            return sent
        if len(sent) != seen:
            seen, since = len(sent), time.monotonic()
        time.sleep(0.2)


def _sipp(port: int, callees: list[str], rate: float, folder: Path) -> tuple[float, str]:
    inject = folder / f"calls-{time.monotonic_ns()}.csv"
    inject.write_text(
        "SEQUENTIAL\n"
        + "".join(f"8613999{n % 1_000_000:06d};{c};user-busy;\n" for n, c in enumerate(callees))
    )
    started = time.monotonic()
    done = subprocess.run(
        [
            "sipp",
            f"127.0.0.1:{port}",
            "-sf",
            str(SIPP_DIR / "diverted.xml"),
            "-inf",
            str(inject),
            "-m",
            str(len(callees)),
            "-r",
            str(int(rate)),
            "-l",
            "5000",
            "-t",
            "u1",
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "-timeout",
            "120s",
            "-nostdin",
            "-trace_err",
            "-error_file",
            str(folder / "sipp-errors.log"),
        ],
        capture_output=True,
        text=True,
        cwd=folder,
        check=False,
    )
    elapsed = time.monotonic() - started
    summary = done.stdout
    failed = "ok" if done.returncode == 0 else f"SIPp exit {done.returncode}"
    for line in summary.splitlines():
        if "Successful call" in line or "Failed call" in line:
            cells = [c.strip() for c in line.split("|")]
            failed += f", {cells[0].lower()} {cells[2] if len(cells) > 2 else '?'}"
    return elapsed, failed


async def _latencies(
    url: str, sent: list[dict[str, Any]], callees: set[str]
) -> tuple[list[float], float]:
    """Per SMS, its acceptance at the SMSC minus its call's arrival; and the first arrival."""
    async with open_pool(url, min_size=1, max_size=2) as pool, pool.connection() as conn:
        rows = await (
            await conn.execute(
                "select callee, called_at from alerts.missed_calls where callee = any(%s)",
                (list(callees),),
            )
        ).fetchall()
    called = {r["callee"]: r["called_at"].timestamp() for r in rows}
    lat = [m["at"] / 1000 - called[m["destination"]] for m in sent if m["destination"] in called]
    return lat, min(called.values(), default=float("nan"))


def _sip_bound(callees: list[str], rate: float, folder: Path) -> tuple[float, str]:
    """SIPp to SIPp on this machine now: the same calls at the same offered rate, answered
    486 at once by a SIPp UAS (bench/alerts/uas.xml): calls per second achieved."""
    port = free_port()
    uas = subprocess.Popen(
        [
            "sipp",
            "-sf",
            str(Path(__file__).parent / "uas.xml"),
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "-t",
            "u1",
            "-nostdin",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=folder,
    )
    try:
        time.sleep(0.5)
        elapsed, state = _sipp(port, callees, rate, folder)
    finally:
        uas.kill()
        uas.wait(5)
    return len(callees) / elapsed, state


def _smsc_bound(port: int, count: int, rate: float) -> dict[str, Any]:
    """A node-smpp client (bench/alerts/blast.js, no bossa code) submitting as many SMS at
    the same offered rate, with bossa's binds and window, receipts answered: the SMSC's
    accepted rate and submit -> resp latency on this machine now."""
    done = subprocess.run(
        [
            "node",
            str(Path(__file__).parent / "blast.js"),
            json.dumps(
                {
                    "port": port,
                    "password": "bench",
                    "count": count,
                    "rate": rate,
                    "binds": 4,
                    "window": 200,
                }
            ),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    try:
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
    except (IndexError, ValueError):
        return {"per_s": float("nan"), "p99_ms": float("nan"), "error": done.stderr[-300:]}


def _fsync_rate(folder: Path, seconds: float = 1.0) -> float:
    """Appends of one line, each fsynced, per second on the spool's disk now."""
    path = folder / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    n, started = 0, time.perf_counter()
    try:
        while time.perf_counter() - started < seconds:
            os.write(fd, b'{"t":"call","probe":1}\n')
            os.fsync(fd)
            n += 1
    finally:
        os.close(fd)
        path.unlink()
    return n / (time.perf_counter() - started)


def _histogram(port: int, name: str, qs: tuple[float, ...] = (0.5, 0.99)) -> list[float]:
    """Quantiles (by bucket upper bounds) of a Prometheus histogram on bossa's /metrics."""
    buckets: list[tuple[float, float]] = []
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + "_bucket{"):
                le = line.split('le="', 1)[1].split('"', 1)[0]
                buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
    if not buckets or buckets[-1][1] == 0:
        return [float("nan") for _ in qs]
    total = buckets[-1][1]
    return [next(le for le, n in buckets if n >= q * total) for q in qs]


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return float("nan")


async def _stages(url: str, callees: set[str]) -> str:
    """Intake (INVITE parsed -> committed), deciding (committed -> notice), sending
    (notice -> submit_sm_resp recorded): where the database-up path spends its time."""
    async with open_pool(url, min_size=1, max_size=2) as pool, pool.connection() as conn:
        rows = await (
            await conn.execute(
                "select extract(epoch from m.recorded_at - m.called_at) as intake,"
                " extract(epoch from n.created_at - m.recorded_at) as decide,"
                " extract(epoch from n.submitted_at - n.created_at) as send"
                " from alerts.missed_calls m join alerts.notices n on n.id = m.notice_id"
                " where m.callee = any(%s)",
                (list(callees),),
            )
        ).fetchall()
    parts = []
    for stage in ("intake", "decide", "send"):
        values = [float(r[stage]) for r in rows if r[stage] is not None]
        parts.append(f"{stage} {fmt(pct(values, 0.5) * 1000)} / {fmt(pct(values, 0.99) * 1000)}")
    return ", ".join(parts)


async def _register(url: str, numbers: list[str]) -> None:
    async with open_pool(url, min_size=1, max_size=2) as pool, pool.connection() as conn:
        cur = conn.cursor()
        await cur.executemany(
            "insert into alerts.subscribers (msisdn, lang) values (%s, 'en')",
            [(n,) for n in numbers],
        )


async def _count(url: str) -> int:
    """Missed calls in the database; -1 if any id is there twice."""
    async with open_pool(url, min_size=1, max_size=1) as pool, pool.connection() as conn:
        row = await (
            await conn.execute(
                "select count(*) as n, count(distinct id) as d from alerts.missed_calls"
            )
        ).fetchone()
    assert row is not None
    return int(row["n"]) if row["n"] == row["d"] else -1


def main() -> None:
    parser = base_parser(__doc__ or "", "300 calls per phase at 300/s")
    parser.add_argument("--rate", type=float, default=1000.0, help="offered calls per second")
    parser.add_argument("--calls", type=int, default=5000, help="calls per phase")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run bossa under cProfile (slower: for where the CPU goes, not for the rates)",
    )
    args = parser.parse_args()
    rate, calls = (300.0, 300) if args.quick else (args.rate, args.calls)

    base = Path(tempfile.mkdtemp(prefix="bossa-bench-alerts-"))
    base.chmod(0o755)
    server = EmbeddedPostgres(base / "pg", port=free_port(), database="bossa", durable=True)
    server.start()
    smsc_port, control, sip, status = free_port(), free_port(), free_port(), free_port()
    smsc = subprocess.Popen(
        [
            "node",
            str(SMSC_DIR / "smsc.js"),
            json.dumps(
                {
                    "port": smsc_port,
                    "controlPort": control,
                    "systemId": "bossa",
                    "password": "bench",
                    "receipts": "after",
                }
            ),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    alerts: subprocess.Popen[bytes] | None = None
    results: dict[str, Any] = {"offered_per_s": rate, "calls": calls}
    lines: list[str] = []
    try:
        url = server.url()
        migrate(url)
        up_callees = [f"8613800{n:06d}" for n in range(calls)]
        down_callees = [f"8613801{n:06d}" for n in range(calls)]
        asyncio.run(_register(url, up_callees + down_callees))
        _wait(lambda: _get(control, "/health") is not None, 10, "the SMSC")
        env = {
            **os.environ,
            "BOSSA_DATABASE_URL": url,
            "BOSSA_DATABASE_POOL_MAX_SIZE": "16",
            "BOSSA_ALERTS_SIP_PORT": str(sip),
            "BOSSA_ALERTS_SMPP_PORT": str(smsc_port),
            "BOSSA_ALERTS_SMPP_PASSWORD": "bench",
            "BOSSA_ALERTS_SMPP_BINDS": "4",
            "BOSSA_ALERTS_SMPP_WINDOW": "200",
            "BOSSA_ALERTS_SMPP_RATE_PER_S": "50000",
            "BOSSA_ALERTS_WINDOW_S": "0",
            "BOSSA_ALERTS_SPOOL_DIR": str(base / "spool"),
            "BOSSA_ALERTS_STATUS_PORT": str(status),
            "BOSSA_ALERTS_REGISTRY_REFRESH_S": "1",
            "BOSSA_LOG_LEVEL": "warning",
        }
        with (base / "alerts.log").open("wb") as sink:
            command = (
                [sys.executable, "-c", _PROFILER, str(base / "bossa")]
                if args.profile
                else [sys.executable, "-c", "from bossa.cli import main; main()", "alerts", "serve"]
            )
            alerts = subprocess.Popen(
                command,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        _wait(lambda: _get(status, "/readyz")["database"] == "up", 120, "bossa alerts up")
        _wait(
            lambda: len(json.loads((base / "spool" / "registry.json").read_text())) == 2 * calls,
            30,
            "the registration copy",
        )

        for phase, callees in (("up", up_callees), ("down", down_callees)):
            if phase == "down":
                server.stop()
                _wait(lambda: _get(status, "/readyz")["database"] == "down", 10, "down")
            pg_pid = server.status().pid
            before = {
                "bossa": tree_cpu(alerts.pid),
                "SMSC": tree_cpu(smsc.pid),
                "PostgreSQL": tree_cpu(pg_pid) if pg_pid and phase == "up" else 0.0,
                "SIPp": _children_cpu(),
            }
            waited = _runqueue_wait(alerts.pid)
            if args.profile:
                alerts.send_signal(signal.SIGUSR1)  # the profile so far is start-up's
                time.sleep(0.5)
            with Cpu() as cpu:
                elapsed, sipp_state = _sipp(sip, callees, rate, base)
                sent = _settle(control, set(callees))
            spent = {
                "bossa": tree_cpu(alerts.pid) - before["bossa"],
                "SMSC": tree_cpu(smsc.pid) - before["SMSC"],
                "PostgreSQL": (tree_cpu(pg_pid) - before["PostgreSQL"])
                if pg_pid and phase == "up"
                else 0.0,
                "SIPp": _children_cpu() - before["SIPp"],
            }
            per_call = ", ".join(
                f"{who} {1000 * cpu_s / max(len(callees), 1):.2f}" for who, cpu_s in spent.items()
            )
            waited = _runqueue_wait(alerts.pid) - waited
            cpu_line = (
                f"CPU per call (ms), database {phase}: {per_call}; over the phase's "
                f"{cpu.wall:.1f} s bossa ran {spent['bossa'] / cpu.wall:.0%} of a core and its "
                f"loop waited {waited:.2f} s for a CPU while runnable"
            )
            print(cpu_line, flush=True)
            lines.append(f"- {cpu_line}")
            if args.profile:
                alerts.send_signal(signal.SIGUSR1)
                time.sleep(1.0)
                profile = sorted(base.glob("bossa-*.prof"), key=lambda p: p.stat().st_mtime)[-1]
                _print_profile(profile, f"database {phase}")
            if phase == "down":
                server.start()
                back = time.monotonic()
                _wait(lambda: _get(status, "/readyz")["database"] == "up", 30, "up again")
                for _ in range(1200):
                    if asyncio.run(_count(url)) == 2 * calls:
                        break
                    time.sleep(0.1)
                results["replay_s"] = time.monotonic() - back
                results["replayed_exactly_once"] = asyncio.run(_count(url)) == 2 * calls
            lat, first_call = asyncio.run(_latencies(url, sent, set(callees)))
            if phase == "up":
                stages = asyncio.run(_stages(url, set(callees)))
                pickup = _histogram(status, "bossa_journal_start_latency_seconds")
                stages += (
                    f"; of which the SMS lane's pickup (entry created -> handler start, "
                    f"histogram bucket bounds) {fmt(pickup[0] * 1000)} / {fmt(pickup[1] * 1000)}"
                )
                print(f"database up: where the time goes (p50 / p99 ms): {stages}", flush=True)
                results["up_stages"] = stages
            if not sent:
                tail = (base / "alerts.log").read_text(errors="replace").splitlines()[-30:]
                print(f"database {phase}: no SMS at all; the alerts log ends:", *tail, sep="\n")
                lines.append(f"- database {phase}: offered {fmt(rate)}/s, NO SMS (see log)")
                continue
            # Same-run bounds: the peers alone, on this machine, right after bossa's phase.
            sip_bound, sip_bound_state = _sip_bound(
                [f"8613803{n:06d}" for n in range(calls)], rate, base
            )
            smsc_bound = _smsc_bound(smsc_port, calls, rate)
            bound = min(sip_bound, float(smsc_bound["per_s"]))
            last = max(m["at"] for m in sent) / 1000
            # End to end: from the first call's arrival to the last SMS accepted.
            achieved = len(sent) / max(last - first_call, 1e-9)
            p99 = pct(lat, 0.99) * 1000
            bossa_ms = 1000 * spent["bossa"] / max(len(callees), 1)
            results[phase] = {
                "sipp": sipp_state,
                "sipp_s": elapsed,
                "sms": len(sent),
                "achieved_per_s": achieved,
                "p50_ms": pct(lat, 0.5) * 1000,
                "p99_ms": p99,
                "max_ms": max(lat) * 1000,
                "cpu": cpu.summary(),
                "cpu_per_call_ms": {k: 1000 * v / len(callees) for k, v in spent.items()},
                "bound_sipp_to_sipp_per_s": sip_bound,
                "bound_smsc": smsc_bound,
            }
            line = (
                f"database {phase:4}: offered {fmt(rate)}/s, achieved {fmt(achieved)}/s end to "
                f"end ({achieved / TARGET_RATE:.2f}x target), {len(sent)}/{len(callees)} SMS "
                f"({len(sent) - len({m['destination'] for m in sent})} duplicates), "
                f"latency p50 {fmt(pct(lat, 0.5) * 1000)} ms p99 {fmt(p99)} ms "
                f"(target {TARGET_P99_MS:.0f} ms: {TARGET_P99_MS / p99:.2f}x) max "
                f"{fmt(max(lat) * 1000)} ms; SIPp {sipp_state}; {cpu.summary()}"
            )
            bound_line = (
                f"database {phase:4}, same-run bounds at the same offered rate: SIPp -> SIPp "
                f"UAS {fmt(sip_bound)}/s ({sip_bound_state}); node-smpp client -> SMSC "
                f"{fmt(float(smsc_bound['per_s']))}/s, its submit->resp p50 "
                f"{fmt(smsc_bound.get('p50_ms'))} ms p99 {fmt(smsc_bound.get('p99_ms'))} ms; "
                f"bossa / the lower bound: {achieved / bound:.2f}x rate, "
                f"bossa p99 / SMSC-alone p99: {p99 / float(smsc_bound['p99_ms'] or 1):.2f}x; "
                f"bossa's CPU {bossa_ms:.2f} ms per call = at most {fmt(1000 / bossa_ms)} "
                "calls/s per core of its own"
            )
            if phase == "down":
                fsyncs = _metric(status, "bossa_alerts_spool_fsyncs_total")
                raw = _fsync_rate(base / "spool")
                records = 3 * len(callees)  # each call, its message 1, its receipt
                bound_line += (
                    f"; spool fsyncs {fmt(fsyncs)} for {records} records ({len(callees)} "
                    f"calls, their messages 1 and receipts: {records / fsyncs:.1f} records "
                    f"per fsync), raw fsync rate on its disk now {fmt(raw)}/s"
                )
            for text in (line, bound_line):
                print(text, flush=True)
                lines.append(f"- {text}")
        if "replayed_exactly_once" in results:
            line = (
                f"spool replayed into PostgreSQL exactly once: {results['replayed_exactly_once']}"
                f" ({calls} calls with their message 1 and receipts, in the database "
                f"{results['replay_s']:.1f} s after it was started again)"
            )
            print(line)
            lines.append(f"- {line}")
    finally:
        if alerts is not None:
            alerts.send_signal(signal.SIGTERM)
            try:
                alerts.wait(15)
            except subprocess.TimeoutExpired:
                alerts.kill()
        smsc.kill()
        server.destroy()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    if not args.no_results:
        command = "python -m bench.alerts.run" + (
            " --quick" if args.quick else f" --rate {rate:g} --calls {calls}"
        )
        append_section(
            ROOT / "bench" / "RESULTS.md",
            [
                "",
                f"## alerts, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, `{command}`, "
                f"git {git_ref()}",
                "",
                *lines,
            ],
        )


if __name__ == "__main__":
    main()
