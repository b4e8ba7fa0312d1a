"""The operator's sync commands from the shell, as docs/sync-and-rating.md shows them:
the publisher's switch, the listener's, the router, a recycle request, and checking a
business-event file (exit 2 naming the field)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bossa.runtime import Runtime
from bossa.sync.service import default_config
from tests.sync.test_sync import runtime  # noqa: F401

pytestmark = pytest.mark.anyio


async def bossa(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bossa.cli", "sync", *args],
        env={**os.environ, "BOSSA_DATABASE_URL": url, "BOSSA_ACCESS_CLI_ACTOR": "ops-anna"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_the_switches_router_and_recycle_from_the_shell(
    runtime: Runtime,  # noqa: F811
) -> None:
    url = runtime.url
    off = await bossa(url, "publisher", "disconnect", "--reason", "reindex", "--json")
    assert off.returncode == 0, off.stderr
    assert json.loads(off.stdout)["connected"] is False
    recycled = await bossa(url, "recycle", "--reason", "tariff fixed")
    assert recycled.returncode == 0, recycled.stderr
    shown = json.loads((await bossa(url, "publisher", "show", "--json")).stdout)
    assert shown["outbox"] == 1  # the recycle request waits in the outbox
    on = await bossa(url, "publisher", "connect", "--json")
    assert json.loads(on.stdout) | {"changed_at": None} == json.loads(on.stdout) | {
        "connected": True,
        "changed_by": "cli:ops-anna",
        "outbox": 0,
        "oldest_outbox_s": 0.0,
        "changed_at": None,
    }
    # No listener runs: disconnecting it returns at once, and says so.
    listener = await bossa(url, "listener", "disconnect", "--wait", "5", "--json")
    assert listener.returncode == 0, listener.stderr
    assert json.loads(listener.stdout)["state"] == "stopped"
    assert json.loads(listener.stdout)["connected"] is False
    assert (await bossa(url, "listener", "connect")).returncode == 0
    routed = await bossa(url, "route", "C-1001", "0")
    assert routed.returncode == 0, routed.stderr
    refused = await bossa(url, "route", "C-1001", "3")  # one instance: 0 only
    assert refused.returncode == 2
    assert "instance" in refused.stderr + refused.stdout
    report = json.loads((await bossa(url, "report", "--json")).stdout)
    assert report["publisher"]["connected"] is True
    assert report["by_state"]["ready"] >= 1
    async with runtime.pool.connection() as conn:
        log = await (
            await conn.execute(
                "select target, action, actor, reason from sync.control_log order by id"
            )
        ).fetchall()
    assert log == [
        {
            "target": "publisher",
            "action": "disconnect",
            "actor": "cli:ops-anna",
            "reason": "reindex",
        },
        {"target": "publisher", "action": "connect", "actor": "cli:ops-anna", "reason": None},
        {"target": "listener", "action": "disconnect", "actor": "cli:ops-anna", "reason": None},
        {"target": "listener", "action": "connect", "actor": "cli:ops-anna", "reason": None},
    ]


async def test_checking_a_business_event_file(tmp_path: Path, db_url: str) -> None:
    printed = await bossa(db_url, "check-events", "--default")
    assert printed.returncode == 0, printed.stderr
    copy = tmp_path / "events.yaml"
    copy.write_text(printed.stdout)
    ok = await bossa(db_url, "check-events", str(copy))
    assert ok.returncode == 0, ok.stderr
    data = yaml.safe_load(printed.stdout)
    assert set(data["business_events"]) == set(default_config().business_events)
    data["threads"]["RecycleRequest"] = 2
    copy.write_text(yaml.safe_dump(data))
    bad = await bossa(db_url, "check-events", str(copy))
    assert bad.returncode == 2
    assert "threads.RecycleRequest" in bad.stderr + bad.stdout
    data["threads"]["RecycleRequest"] = 1
    data["policy_hook"] = "os.system"
    copy.write_text(yaml.safe_dump(data))
    hook = await bossa(db_url, "check-events", str(copy))
    assert hook.returncode == 2
    assert "policy_hook" in hook.stderr + hook.stdout
