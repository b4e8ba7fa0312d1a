"""bench/partners: the partner platform's two figures (issue 16).

1. Template runs per second through the open API: `bossa serve` in its own process, a
   three-object template (subscriber.status, compare, branch), a partner token, rate
   limits and quotas on, the load from wrk in another process; p50/p99 from wrk. Each
   answer comes after the run's result and billing log committed (synchronous commit,
   fsync on); the run and log counts are checked against the 200s afterwards.
2. Billing logs to MDR records per second against a raw `COPY (...) TO STDOUT` of the same
   rows in the same run: the collect stage (verify, standardise, rate), the file stage
   (records to an MDR file in the spool), and both; the ratio is file stage / COPY.

One command: `.venv/bin/python -m bench.partners.run [--quick]`. A private durable
PostgreSQL on a free port, destroyed at the end; nothing on 5432 is touched.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from bench.common import ROOT, Cpu, append_section, base_parser, fmt, free_port, git_ref
from bossa.access import Role, create_token
from bossa.access.models import TokenRequest
from bossa.db import EmbeddedPostgres, open_pool
from bossa.db.migrations import migrate
from bossa.journal import Journal, JournalSettings, NewEntry
from bossa.partners import (
    BILLING_LANE,
    PartnerRequest,
    PartnersSettings,
    PolicyRequest,
    TemplateRequest,
    add_policy,
    register_template,
    set_partner,
    write_files,
)
from bossa.partners.lanes import collector
from bossa.partners.models import BILLING_KIND, Limits

TEMPLATE = """
inputs:
  subscriber: {type: string, max_length: 64}
  amount: {type: integer, minimum: 1, maximum: 100000}
steps:
  - id: status
    object: subscriber.status
    with: {subscriber: $input.subscriber}
  - id: active
    object: compare
    with: {left: $steps.status.status, op: eq, right: active}
  - id: decide
    object: branch
    with: {condition: $steps.active.result}
    then: end
    else: end
outputs:
  status: $steps.status.status
"""
BOSSA = str(Path(sys.executable).with_name("bossa"))
_PROFILED = """
import cProfile, signal, sys, time
from bossa.cli import main
out, sys.argv = sys.argv[1], ["bossa", "serve"]
# uvicorn raises the SIGTERM it caught again once it has stopped: end here, so the
# stats are written.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
profile = cProfile.Profile(time.process_time)
try:
    profile.runcall(main)
except SystemExit:
    pass
finally:
    profile.dump_stats(out)
"""


async def seed(url: str) -> str:
    async with open_pool(url, min_size=1, max_size=4) as pool:
        await set_partner(
            pool,
            PartnerRequest(
                name="bench", display_name="Bench", rate_per_s=100_000, daily_quota=10**9
            ),
            actor="bench",
        )
        await register_template(
            pool,
            TemplateRequest(
                name="status",
                partner="bench",
                definition=TEMPLATE,
                limits=Limits(rate_per_s=100_000, daily_quota=10**9),
            ),
            actor="bench",
        )
        await add_policy(
            pool,
            PolicyRequest(
                partner="bench",
                valid_from=date(2020, 1, 1),
                currency="EUR",
                per_use_fee=5,
                per_unit_fee=2,
                revenue_share_bp=1500,
            ),
            actor="bench",
        )
        async with pool.connection() as conn, conn.transaction():
            await conn.execute(
                "insert into customers.products (code, name, created_by)"
                " values ('SMS', 'sms', 'bench')"
            )
            await conn.execute(
                "insert into customers.customers (id, name, created_by) values ('c1', 'c1', 'b')"
            )
            await conn.execute(
                "insert into customers.contracts (sa_id, customer_id, product_code, created_by)"
                " values ('SA1', 'c1', 'SMS', 'b')"
            )
        created = await create_token(
            pool, TokenRequest(name="bench", role=Role.PARTNER), actor="bench"
        )
    return created.token


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("bossa serve exited at start")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("bossa serve did not listen in time")


def wrk(port: int, token: str, *, seconds: int, connections: int, workdir: Path) -> dict[str, Any]:
    script = workdir / "run.lua"
    body = json.dumps({"input": {"subscriber": "c1", "amount": 5}})
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {token}"\n'
    )
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/partners/templates/status/runs",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def latency(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if match is None:
            return float("nan")
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]
        return float(match.group(1)) * scale

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "runs_per_s": float(rps.group(1)) if rps else float("nan"),
        "requests": int(total.group(1)) if total else 0,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "raw": out,
    }


def cpu_s(pid: int, *, children: bool = False) -> float:
    """CPU seconds (user + system) a process has used so far; with `children`, its
    children's too (those it waited for, and those alive now)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                child = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(child[1]) == pid:
                ticks += int(child[11]) + int(child[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def postmaster(pg: EmbeddedPostgres) -> int:
    return int((pg.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])


async def counts(url: str) -> tuple[int, int, int]:
    """(runs, billing logs, transactions that wrote runs), read in one snapshot: a run
    and its log commit together; rows of one transaction share their xmin."""
    async with open_pool(url, min_size=1, max_size=2) as pool, pool.connection() as conn:
        row = await (
            await conn.execute(
                "select (select count(*) from partners.runs) as runs,"
                " (select count(*) from journal.lane_entries"
                "   where lane = 'partners.billing') as logs,"
                " (select count(distinct xmin::text) from partners.runs) as commits"
            )
        ).fetchone()
    assert row is not None
    return int(row["runs"]), int(row["logs"]), int(row["commits"])


async def billing(url: str, n: int, spool: Path) -> dict[str, Any]:
    """N billing logs -> records (collect) -> one MDR file (write); COPY of the same rows."""
    settings = PartnersSettings(spool_dir=spool, records_per_file=1_000_000, collect_batch=5000)
    now = datetime.now(UTC).isoformat()
    async with open_pool(url, min_size=1, max_size=8) as pool:
        journal = Journal(pool, JournalSettings(), actor="bench")
        async with pool.connection() as conn:
            await conn.execute("truncate partners.billing_records, partners.billing_rejects")
        for start in range(0, n, 10_000):
            await journal.enqueue(
                [
                    NewEntry(
                        BILLING_LANE,
                        BILLING_KIND,
                        {
                            "run_id": 10_000_000 + i,
                            "partner": "bench",
                            "template": "status",
                            "version": 1,
                            "used_at": now,
                            "units": i % 3,
                            "charged": 0,
                            "currency": None,
                        },
                    )
                    for i in range(start, min(n, start + 10_000))
                ]
            )
        with Cpu() as collect_cpu:
            await collector(journal, settings).run(until_idle=True)
        # Every log on the lane is collected, the API load's too: count what was.
        async with pool.connection() as conn:
            row = await (
                await conn.execute(
                    "select (select count(*) from partners.billing_records)"
                    " + (select count(*) from partners.billing_rejects) as n"
                )
            ).fetchone()
        assert row is not None
        collected = int(row["n"])
        with Cpu() as write_cpu:
            files = await write_files(pool, settings)
        records = sum(1 for _ in (spool / f"MDR_BOSSA_{files[0]:08d}.dat").open()) - 2
        # The same rows as the file: its record id range.
        async with pool.connection() as conn:
            bounds = await (
                await conn.execute(
                    "select after_id, upto_id from partners.mdr_files where seq = %s", (files[0],)
                )
            ).fetchone()
        assert bounds is not None
        query = (
            "copy (select id, run_id, kind, partner, template, version, used_at, units, charged,"
            " fee, share, currency from partners.billing_records where id > %s and id <= %s"
            " order by id) to stdout"
        )
        with Cpu() as copy_cpu:
            async with pool.connection() as conn:
                cursor = conn.cursor()
                with (spool / "copy.txt").open("wb") as out:
                    async with cursor.copy(query, (bounds["after_id"], bounds["upto_id"])) as copy:
                        async for chunk in copy:
                            out.write(chunk)
    return {
        "logs": n,
        "records": records,
        "collected": collected,
        "collect_per_s": collected / collect_cpu.wall,
        "write_per_s": records / write_cpu.wall,
        "both_per_s": records / (collect_cpu.wall + write_cpu.wall),
        "copy_per_s": records / copy_cpu.wall,
        "collect_cpu": collect_cpu.summary(),
        "write_cpu": write_cpu.summary(),
    }


def load_test(
    command: list[str],
    env: dict[str, str],
    port: int,
    pg: EmbeddedPostgres,
    url: str,
    workdir: Path,
    *,
    token: str,
    seconds: int,
    connections: int,
) -> dict[str, Any]:
    """Start a server, warm it up, load it with wrk; its figures, CPU a run of it, of
    PostgreSQL and of wrk, and the runs and billing logs written meanwhile."""
    server = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        _wait_port(port, server)
        wrk(port, token, seconds=3, connections=4, workdir=workdir)  # warm up
        before = asyncio.run(counts(url))
        cpu0, pg0 = cpu_s(server.pid), cpu_s(postmaster(pg), children=True)
        wrk0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        with Cpu() as machine:
            load = wrk(port, token, seconds=seconds, connections=connections, workdir=workdir)
        server_cpu = cpu_s(server.pid) - cpu0
        pg_cpu = cpu_s(postmaster(pg), children=True) - pg0
        wrk1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wrk_cpu = (wrk1.ru_utime - wrk0.ru_utime) + (wrk1.ru_stime - wrk0.ru_stime)
        after = asyncio.run(counts(url))
    finally:
        server.terminate()
        server.wait(30)
    load.pop("raw")
    n = max(1, load["requests"])
    per_run_ms, pg_ms, wrk_ms = (1000 * x / n for x in (server_cpu, pg_cpu, wrk_cpu))
    return {
        **load,
        "runs": after[0] - before[0],
        "billing_logs": after[1] - before[1],
        "runs_per_commit": (after[0] - before[0]) / max(1, after[2] - before[2]),
        "answers_200": load["requests"] - load["non_2xx"],
        # CPU a run, and the machine's busy share over the load: on a machine others
        # load too, these say what the figure would be with the cores free.
        "server_cpu_ms_per_run": per_run_ms,
        "postgres_cpu_ms_per_run": pg_ms,
        "wrk_cpu_ms_per_run": wrk_ms,
        "free_cores_bound_runs_per_s": 1000
        * (os.cpu_count() or 1)
        / max(1e-9, per_run_ms + pg_ms + wrk_ms),
        "machine_busy_cores": machine.machine / machine.wall,
    }


def _describe(api: dict[str, Any], connections: int, seconds: int) -> str:
    return (
        f"{fmt(api['runs_per_s'])} runs/s, p50 {fmt(api['p50_ms'])} ms,"
        f" p99 {fmt(api['p99_ms'])} ms ({connections} connections, {seconds} s);"
        f" {api['answers_200']} answers 200, {api['runs']} runs, {api['billing_logs']} billing"
        f" logs, {api['runs_per_commit']:.1f} runs a commit, {api['non_2xx']} others;"
        f" CPU a run: server {api['server_cpu_ms_per_run']:.2f}"
        f" ms, PostgreSQL {api['postgres_cpu_ms_per_run']:.2f} ms, wrk"
        f" {api['wrk_cpu_ms_per_run']:.2f} ms (so at most"
        f" {fmt(api['free_cores_bound_runs_per_s'])} runs/s on {os.cpu_count()} free cores);"
        f" machine busy {api['machine_busy_cores']:.2f} of {os.cpu_count()} cores"
    )


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], "20 s of load and 20,000 billing logs")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--profile",
        type=Path,
        help="run the API process under cProfile and write its stats here (slows it)",
    )
    args = parser.parse_args()
    seconds, logs = (20, 20_000) if args.quick else (60, 100_000)
    ref = git_ref()
    base = Path(tempfile.mkdtemp(prefix="bossa-bench-partners-"))
    base.chmod(0o755)
    port = free_port()
    pg = EmbeddedPostgres(base / "pg", port=port, database="bossa", durable=True)
    pg.start()
    results: dict[str, Any] = {"ref": ref, "quick": args.quick}
    try:
        url = pg.url("bossa")
        migrate(url)
        token = asyncio.run(seed(url))
        api_port = free_port()
        env = {
            **os.environ,
            "BOSSA_DATABASE_URL": url,
            "BOSSA_API_PORT": str(api_port),
            "BOSSA_LOG_LEVEL": "warning",
        }
        print(f"bench/partners at {ref}: PostgreSQL on {port} (fsync on), API on {api_port}")
        command = [BOSSA, "serve"]
        if args.profile is not None:
            # CPU time, not wall time: on a shared machine a wall-clock profile charges
            # other processes' turns to whatever was running.
            command = [sys.executable, "-c", _PROFILED, str(args.profile)]
        load_args = {"token": token, "seconds": seconds, "connections": args.connections}
        api = load_test(command, env, api_port, pg, url, base, **load_args)
        results["api"] = api
        print(f"  API: {_describe(api, args.connections, seconds)}")
        bare_port = free_port()
        bare = load_test(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.partners.bare:app",
                "--port",
                str(bare_port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env,
            bare_port,
            pg,
            url,
            base,
            **load_args,
        )
        results["bare"] = bare
        print(f"  bare peer: {_describe(bare, args.connections, seconds)}")
        api_ratio = api["runs_per_s"] / bare["runs_per_s"]
        results["api"]["ratio_to_bare"] = api_ratio
        results["api"]["ratio_cpu_to_bare"] = (
            bare["server_cpu_ms_per_run"] / api["server_cpu_ms_per_run"]
        )
        print(
            f"  bossa/bare: runs/s {api_ratio:.2f}x, p99 bare/bossa"
            f" {bare['p99_ms'] / api['p99_ms']:.2f}x, server CPU a run bare/bossa"
            f" {results['api']['ratio_cpu_to_bare']:.2f}x"
        )
        bill = asyncio.run(billing(url, logs, base / "spool"))
        results["billing"] = bill
        ratio = bill["write_per_s"] / bill["copy_per_s"]
        results["billing"]["ratio_write_to_copy"] = ratio
        results["billing"]["ratio_both_to_copy"] = bill["both_per_s"] / bill["copy_per_s"]
        print(
            f"  billing: {bill['collected']} logs (the API loads' too): collect"
            f" {fmt(bill['collect_per_s'])} logs/s ({bill['collect_cpu']});"
            f" MDR file {fmt(bill['write_per_s'])} records/s ({bill['write_cpu']});"
            f" COPY TO {fmt(bill['copy_per_s'])} rows/s; file/COPY {ratio:.2f}x,"
            f" collect+file/COPY {results['billing']['ratio_both_to_copy']:.3f}x"
        )
        api_met = api["runs_per_s"] >= 1000 and api["p99_ms"] <= 50
        print(f"  {'MET ' if api_met else 'MISS'} >= 1,000 runs/s with p99 <= 50 ms")
        print(f"  {'MET ' if ratio >= 0.5 else 'MISS'} MDR records/s >= 0.5x COPY TO")
    finally:
        pg.destroy()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if not args.no_results:
        api, bare, bill = results["api"], results["bare"], results["billing"]
        append_section(
            ROOT / "bench" / "RESULTS.md",
            [
                "",
                f"## bench/partners, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {ref}"
                f"{' (quick)' if args.quick else ''}",
                "",
                f"`.venv/bin/python -m bench.partners.run{' --quick' if args.quick else ''}"
                f"{'' if args.connections == 32 else f' --connections {args.connections}'}`",
                "",
                f"- open API, three-object template, {args.connections} connections from wrk:"
                f" {fmt(api['runs_per_s'])} runs/s, p50 {fmt(api['p50_ms'])} ms,"
                f" p99 {fmt(api['p99_ms'])} ms; {api['answers_200']} answers 200,"
                f" {api['runs']} runs, {api['billing_logs']} billing logs (target >= 1,000/s,"
                f" p99 <= 50 ms); CPU a run: API process {api['server_cpu_ms_per_run']:.2f} ms,"
                f" PostgreSQL {api['postgres_cpu_ms_per_run']:.2f} ms, wrk"
                f" {api['wrk_cpu_ms_per_run']:.2f} ms (at most"
                f" {fmt(api['free_cores_bound_runs_per_s'])} runs/s on free cores);"
                f" machine busy {api['machine_busy_cores']:.2f} cores during the load",
                f"- bare peer (bench/partners/bare.py: same SQL work, bare ASGI, one commit a"
                f" request): {fmt(bare['runs_per_s'])} runs/s, p50 {fmt(bare['p50_ms'])} ms,"
                f" p99 {fmt(bare['p99_ms'])} ms; {bare['answers_200']} answers 200,"
                f" {bare['runs']} runs, {bare['billing_logs']} billing logs; CPU a run:"
                f" server {bare['server_cpu_ms_per_run']:.2f} ms, PostgreSQL"
                f" {bare['postgres_cpu_ms_per_run']:.2f} ms; bossa/bare runs/s"
                f" {api['ratio_to_bare']:.2f}x, server CPU a run bare/bossa"
                f" {api['ratio_cpu_to_bare']:.2f}x",
                f"- billing, {bill['logs']} logs (+ the API loads': {bill['collected']}"
                f" collected): collect {fmt(bill['collect_per_s'])}/s,"
                f" MDR file {fmt(bill['write_per_s'])} records/s, COPY TO"
                f" {fmt(bill['copy_per_s'])} rows/s: file/COPY"
                f" {bill['ratio_write_to_copy']:.2f}x (target >= 0.5x), collect+file/COPY"
                f" {bill['ratio_both_to_copy']:.3f}x",
            ],
        )


if __name__ == "__main__":
    main()
