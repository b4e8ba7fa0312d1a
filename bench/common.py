"""What every benchmark shares: the git ref it measured, a free port, percentiles,
number formatting and a CPU split between this process and the rest of the machine."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["ROOT", "Cpu", "fmt", "free_port", "git_ref", "pct"]

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def git_ref() -> str:
    """The commit measured, marked when src/ had uncommitted changes."""
    try:
        ref = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "src"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return ref + ("+dirty-src" if dirty else "")


def pct(values: list[float], q: float) -> float:
    """The q-quantile by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def fmt(v: float | None) -> str:
    if v is None or v != v:
        return "n/a"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.2f}"


def _machine_ticks() -> tuple[int, int]:
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    return sum(parts), parts[3] + parts[4]


class Cpu:
    """This process's CPU and the whole machine's over a block (the rest is mostly the
    servers), so a figure says whether Python or the server bounded it."""

    def __enter__(self) -> Cpu:
        self.t0, self.p0, self.m0 = time.perf_counter(), time.process_time(), _machine_ticks()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.py = time.process_time() - self.p0
        total, idle = _machine_ticks()
        busy = (total - self.m0[0]) - (idle - self.m0[1])
        self.machine = busy / os.sysconf("SC_CLK_TCK")

    def summary(self) -> str:
        other = max(0.0, self.machine - self.py)
        return (
            f"python {self.py / self.wall:.0%} of a core, rest of machine"
            f" {other / self.wall:.0%} of a core ({os.cpu_count()} cores)"
        )


def base_parser(description: str, quick_help: str) -> argparse.ArgumentParser:
    """The flags every benchmark takes: --quick, --json, --no-results."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument(
        "--no-results", action="store_true", help="do not append to bench/RESULTS.md"
    )
    return parser


def append_section(path: Path, lines: list[str]) -> None:
    """Append one run's section to bench/RESULTS.md (created with its heading if new)."""
    if not path.exists():
        path.write_text(
            "# Benchmark results\n\nAppended by the benchmarks in bench/; newest last.\n"
        )
    with path.open("a") as f:
        f.write("\n".join(lines) + "\n")
