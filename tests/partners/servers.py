"""Real peers for the partner tests, each in its own process on a free port: the stand-in
legacy system (REST and SOAP) and the legacy billing system, OpenSSH's sshd with a
chrooted SFTP-only user. The machine's own sshd (if any) is never touched."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.provisioning.servers import ServerProcess
from tests.support import free_port

__all__ = ["LegacyServer", "SftpServer"]

HERE = Path(__file__).resolve().parent
SFTP_USER = "bossa-sftp"


class LegacyServer(ServerProcess):
    def __init__(self) -> None:
        workdir = Path(tempfile.mkdtemp(prefix="bossa-legacy-"))
        port = free_port()
        self.calls_path = workdir / "calls.jsonl"
        super().__init__(
            "legacy",
            [
                sys.executable,
                str(HERE / "legacy_server.py"),
                "--port",
                str(port),
                "--log",
                str(self.calls_path),
            ],
            port=port,
            workdir=workdir,
            url=f"http://127.0.0.1:{port}",
        )

    def calls(self) -> list[dict[str, Any]]:
        if not self.calls_path.exists():
            return []
        return [json.loads(line) for line in self.calls_path.read_text().splitlines()]


def _ensure_user() -> None:
    try:
        pwd.getpwnam(SFTP_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SFTP_USER],
            check=True,
        )
        # '*' instead of useradd's locked '!': sshd (without PAM) refuses locked accounts;
        # '*' still matches no password, and the config allows keys only.
        subprocess.run(["usermod", "-p", "*", SFTP_USER], check=True)


class SftpServer(ServerProcess):
    """sshd on a free port, its own host key and config; user bossa-sftp logs in with a
    key, is chrooted to `root`, and may only use SFTP. Files land in `root/in`."""

    def __init__(self) -> None:
        _ensure_user()
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        base = Path(tempfile.mkdtemp(prefix="bossa-sftp-"))
        base.chmod(0o755)
        self.base = base
        # The chroot and every folder above it must be root's and writable by no one else
        # (so not under /tmp); `in` is the user's.
        parent = Path("/run/bossa-sftp-tests")
        parent.mkdir(mode=0o755, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="chroot-", dir=parent))
        self.root.chmod(0o755)
        self.inbox = self.root / "in"
        self.inbox.mkdir()
        user = pwd.getpwnam(SFTP_USER)
        os.chown(self.inbox, user.pw_uid, user.pw_gid)
        self.host_key = base / "host_ed25519"
        self.client_key = base / "client_ed25519"
        for key in (self.host_key, self.client_key):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
            )
        authorized = base / "authorized_keys"
        shutil.copy(self.client_key.with_suffix(".pub"), authorized)
        authorized.chmod(0o644)
        port = free_port()
        self.known_hosts = base / "known_hosts"
        host_pub = self.host_key.with_suffix(".pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
        config = base / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"PidFile {base / 'sshd.pid'}",
                    f"AuthorizedKeysFile {authorized}",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin no",
                    "UsePAM no",
                    "StrictModes no",
                    f"AllowUsers {SFTP_USER}",
                    "Subsystem sftp internal-sftp",
                    f"Match User {SFTP_USER}",
                    f"    ChrootDirectory {self.root}",
                    "    ForceCommand internal-sftp",
                    "    AllowTcpForwarding no",
                    "    X11Forwarding no",
                    "",
                ]
            )
        )
        super().__init__(
            "sshd",
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
            port=port,
            workdir=base,
            url=f"sftp://127.0.0.1:{port}",
        )

    def files(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.inbox.iterdir())}

    def kill(self) -> None:
        """SIGKILL the listener and every session it forked (a server cut off mid-transfer)."""
        if self._proc is not None:
            subprocess.run(["pkill", "-KILL", "-P", str(self._proc.pid)], check=False)
            self._proc.kill()
            self._proc.wait(5)
            self._proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)
