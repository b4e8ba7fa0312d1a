"""The partner chapter of `bossa demo`: a content provider registers a template, runs it
through the open API with its own token, and the billing processor delivers the MDR file
to an SFTP server.

The demo's SFTP server is asyncssh's, in this process, chrooted to a temporary folder
(the tests use OpenSSH's sshd; a demo must not need root or a system user): bossa logs in
with a key, checks the server's host key, and transfers as it would to a billing system.
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import httpx
from rich.console import Console

from bossa.access import Role, create_token
from bossa.access.models import TokenRequest
from bossa.partners import service
from bossa.partners.lanes import BillingProcessor
from bossa.partners.models import Limits, PartnerRequest, PolicyRequest, TemplateRequest
from bossa.partners.settings import PartnersSettings
from bossa.runtime import Runtime
from bossa.terminal import table

__all__ = ["chapter"]

TEMPLATE = """
description: is the subscriber active with more than one contract?
inputs:
  subscriber: {type: string, max_length: 64}
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
    then: several
    else: end
  - id: several
    object: compare
    with: {left: $steps.status.contracts, op: gt, right: 1}
outputs:
  status: $steps.status.status
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def _sftp_server(root: Path) -> AsyncIterator[tuple[int, Path, Path]]:
    """An SFTP server on a free port, chrooted to `root`: (port, client key, known_hosts)."""
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    keys = root.parent
    client_path = keys / "client_key"
    client_key.write_private_key(str(client_path))
    port = _free_port()
    known = keys / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_key.export_public_key().decode()}")
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())

    def sftp(chan: asyncssh.SSHServerChannel[bytes]) -> asyncssh.SFTPServer:
        return asyncssh.SFTPServer(chan, chroot=str(root).encode())

    server = await asyncssh.listen(
        "127.0.0.1",
        port,
        server_host_keys=[host_key],
        authorized_client_keys=authorized,
        sftp_factory=sftp,
        allow_scp=False,
    )
    try:
        yield port, client_path, known
    finally:
        server.close()
        await server.wait_closed()


async def chapter(out: Console, runtime: Runtime) -> None:
    pool = runtime.pool
    await service.set_partner(
        pool,
        PartnerRequest(name="acme-content", display_name="ACME Content", rate_per_s=50),
        actor="demo",
    )
    info = await service.register_template(
        pool,
        TemplateRequest(
            name="vip-check",
            partner="acme-content",
            definition=TEMPLATE,
            limits=Limits(rate_per_s=20, daily_quota=1000),
        ),
        actor="demo",
    )
    out.print(f"template {info.name} v{info.version} for {info.partner}: 4 objects, checked")
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date()
    await service.add_policy(
        pool,
        PolicyRequest(
            partner="acme-content",
            valid_from=yesterday,
            currency="KRW",
            per_use_fee=30,
            revenue_share_bp=1000,
        ),
        actor="demo",
    )
    token = await create_token(
        pool, TokenRequest(name="acme-content", role=Role.PARTNER, expires_days=1), actor="demo"
    )
    from bossa.api import create_app  # the app imports every module: only when the demo runs

    app = create_app()
    app.state.runtime = runtime
    headers = {"Authorization": f"Bearer {token.token}"}
    rows = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://bossa", headers=headers
    ) as http:
        for subscriber in ("C-1001", "C-1002", "C-9999"):
            answer = await http.post(
                "/partners/templates/vip-check/runs", json={"input": {"subscriber": subscriber}}
            )
            run = answer.json()
            rows.append(
                {
                    "subscriber": subscriber,
                    "HTTP": answer.status_code,
                    "run": run.get("id"),
                    "output": run.get("output"),
                }
            )
        bad = await http.post(
            "/partners/templates/vip-check/runs", json={"input": {"subscriber": 42}}
        )
        rows.append(
            {
                "subscriber": "42 (a number)",
                "HTTP": bad.status_code,
                "run": None,
                "output": bad.json(),
            }
        )
    table(rows, ["subscriber", "HTTP", "run", "output"])
    out.print("a refused request runs nothing and bills nothing")

    with tempfile.TemporaryDirectory(prefix="bossa-demo-sftp-") as folder:
        root = Path(folder) / "billing-system"
        (root / "in").mkdir(parents=True)
        async with _sftp_server(root) as (port, key, known):
            settings = PartnersSettings(
                spool_dir=Path(folder) / "spool",
                sender="BOSSA",
                recipient="LEGACYBILL",
                sftp_host="127.0.0.1",
                sftp_port=port,
                sftp_user="billing",
                sftp_key_file=key,
                sftp_known_hosts=known,
                sftp_dir="in",
            )
            written, sent = await BillingProcessor(runtime.journal, settings).round()
        out.print(f"billing processor: MDR files written {written}, confirmed on SFTP {sent}")
        for path in sorted((root / "in").iterdir()):
            out.print(f"on the billing system's SFTP server: {path.name}")
            for line in path.read_text().splitlines():
                out.print(f"  {line}", markup=False, highlight=False)
