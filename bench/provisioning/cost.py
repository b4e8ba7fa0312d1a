"""Where a replayed command's CPU goes: the backup daemon's drain of an N-command backlog
per division, with the real adapter and with a no-op one (the daemon's ceiling), as
commands/s and CPU microseconds per command of this Python process, bossa's PostgreSQL,
the AAA PostgreSQL and redis-server.

    .venv/bin/python -m bench.provisioning.cost [--n 100000] [--rounds 1] [--divisions HDS AAA]

It builds the same world as bench/provisioning/run.py (its servers, plans and fill) and
prints only; nothing is appended to RESULTS.md. On a shared machine wall-clock rates
move with the neighbours' load; CPU per command moves much less, so it is the figure to
compare between two versions of the code.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.provisioning import run as P

_pids: dict[str, Any] = {}


def _tree_cpu(pid: int) -> float:
    total = 0.0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _redis_cpu(port: str) -> float:
    for proc in psutil.process_iter(["name", "cmdline"]):
        name, argv = proc.info["name"] or "", " ".join(proc.info["cmdline"] or [])
        # redis-server rewrites its command line to "redis-server 127.0.0.1:PORT"
        if "redis" in name and (f":{port}" in argv or f"--port {port}" in argv):
            times = proc.cpu_times()
            return float(times.user + times.system)
    return 0.0


def _snapshot() -> dict[str, float]:
    me = psutil.Process().cpu_times()
    return {
        "python": me.user + me.system,
        "bossa_pg": _tree_cpu(_pids["bossa"]),
        "target_pg": _tree_cpu(_pids["target"]),
        "redis": _redis_cpu(_pids["redis_port"]),
        "wall": time.perf_counter(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="backlog per drain")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--divisions", nargs="+", default=["HDS", "AAA"])
    args = parser.parse_args()

    run_with = P.run_with

    async def recording_run_with(
        s: Any, report: Any, bossa_pg: Any, target_pg: Any, redis_proc: Any
    ) -> Any:
        _pids["bossa"] = bossa_pg.status().pid
        _pids["target"] = target_pg.status().pid
        _pids["redis_port"] = redis_proc.url.rsplit(":", 1)[1].split("/")[0]
        return await run_with(s, report, bossa_pg, target_pg, redis_proc)

    async def drains(world: Any, s: Any, report: Any) -> None:
        n = args.n
        for r in range(args.rounds):
            for division in args.divisions:
                for mode in ("real", "no-op"):
                    world.clear_targets()
                    await P.fill(world, division, n, 1000, f"SA-{division}-{r}-{mode}")
                    # Built (its module imported) before the clock, as the no-op does.
                    await world.deliverer._adapter(division)
                    before = _snapshot()
                    if mode == "real":
                        await P.drain_buffer(world, division)
                    else:
                        await P.journal_only_drain(world, division)
                    after = _snapshot()
                    wall = after["wall"] - before["wall"]
                    cpu = {k: (after[k] - before[k]) / n * 1e6 for k in before if k != "wall"}
                    print(
                        f"{division} {mode:5s} {n / wall:7,.0f}/s  CPU us/command: "
                        + ", ".join(f"{k} {v:.0f}" for k, v in cpu.items())
                        + f"; total {sum(cpu.values()):.0f}",
                        flush=True,
                    )

    P.run_with = recording_run_with  # type: ignore[assignment]
    P.bench_replay = drains  # type: ignore[assignment]
    s = P.Settings.make(True)
    s.replay_only = True
    os.chdir(P.ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(P.run(s, P.Report(), Path(tmp)))


if __name__ == "__main__":
    main()
