"""A REST division for the adapter tests: stdlib HTTP server, in its own process.

Run as `python tests/provisioning/rest_server.py --port N --db PATH`. A write is applied
once per Idempotency-Key and recorded in the SQLite file in order (also GET /applied).
A path containing "/fail/" or a JSON body whose saId starts with "FAIL" gets a 500; a
saId starting with "SLOW" gets its answer after 5 s (for client timeouts); a saId
starting with "ECHO" gets a 500 that quotes the request's Authorization header, as a
careless server might (the deliverer must mask the division's credentials in it).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SCHEMA = """
create table if not exists applied (
    seq integer primary key autoincrement,
    idempotency_key text not null unique,
    message_id text,
    method text not null,
    path text not null,
    body text
)
"""

_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    db_path = ""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path != "/applied":
            self._reply(404, {"error": "not found"})
            return
        with _lock, sqlite3.connect(self.db_path) as conn:
            rows = conn.execute(
                "select idempotency_key, method, path, body from applied order by seq"
            ).fetchall()
        self._reply(200, [{"key": k, "method": m, "path": p, "body": b} for k, m, p, b in rows])

    def do_POST(self) -> None:
        self._write()

    do_PUT = do_PATCH = do_DELETE = do_POST

    def _write(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode() if length else None
        body = json.loads(raw) if raw else None
        key = self.headers.get("Idempotency-Key")
        if not key:
            self._reply(400, {"error": "Idempotency-Key required"})
            return
        sa_id = str(body.get("saId", "")) if isinstance(body, dict) else ""
        if sa_id.startswith("SLOW"):
            time.sleep(5)
        if sa_id.startswith("ECHO"):
            self._reply(500, {"error": f"bad credential {self.headers.get('Authorization')}"})
            return
        if "/fail/" in self.path or sa_id.startswith("FAIL"):
            self._reply(500, {"error": f"division refused {sa_id or self.path}"})
            return
        with _lock, sqlite3.connect(self.db_path) as conn:
            cur = conn.execute(
                "insert or ignore into applied (idempotency_key, message_id, method, path, body)"
                " values (?, ?, ?, ?, ?)",
                (key, self.headers.get("X-Message-Id"), self.command, self.path, raw),
            )
        self._reply(201 if cur.rowcount else 200, {"applied": bool(cur.rowcount)})

    def _reply(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True)
    args = parser.parse_args()
    Handler.db_path = args.db
    with sqlite3.connect(args.db) as conn:
        conn.execute(SCHEMA)
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
