"""A SOAP 1.1 division for the adapter tests: spyne, in its own process.

Run as `python tests/provisioning/soap_server.py --port N --db PATH`. Every operation
takes `messageId` and is applied once per message id; applied calls go to the SQLite
file in order. A saId starting with "FAULT" is refused with a Client.Rejected fault.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import threading
import warnings
from wsgiref.simple_server import WSGIRequestHandler, make_server

warnings.simplefilter("ignore")  # spyne 2.14 warns on import under Python 3.11

from spyne import Application, Fault, Integer, ServiceBase, Unicode, rpc  # noqa: E402
from spyne.protocol.soap import Soap11  # noqa: E402
from spyne.server.wsgi import WsgiApplication  # noqa: E402

NAMESPACE = "urn:bossa:test:division"
SCHEMA = """
create table if not exists applied (
    seq integer primary key autoincrement,
    message_id text not null unique,
    operation text not null,
    params text not null
)
"""

_db_path = ""
_lock = threading.Lock()


def _apply(operation: str, message_id: str | None, params: dict[str, object]) -> str:
    if not message_id:
        raise Fault(faultcode="Client.NoMessageId", faultstring="messageId is required")
    sa_id = str(params.get("saId") or "")
    if sa_id.startswith("FAULT"):
        raise Fault(faultcode="Client.Rejected", faultstring=f"contract {sa_id} refused")
    with _lock, sqlite3.connect(_db_path) as conn:
        cur = conn.execute(
            "insert or ignore into applied (message_id, operation, params) values (?, ?, ?)",
            (message_id, operation, json.dumps(params, sort_keys=True)),
        )
        return "APPLIED" if cur.rowcount else "DUPLICATE"


class DivisionService(ServiceBase):
    @rpc(Unicode, Unicode, Unicode, Unicode, _returns=Unicode)
    def Provision(ctx, messageId, saId, intfCode, service):
        params = {"saId": saId, "intfCode": intfCode, "service": service}
        return _apply("Provision", messageId, params)

    @rpc(Unicode, Unicode, Integer, _returns=Unicode)
    def Terminate(ctx, messageId, saId, reason):
        return _apply("Terminate", messageId, {"saId": saId, "reason": reason})


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    global _db_path
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True)
    args = parser.parse_args()
    _db_path = args.db
    with sqlite3.connect(_db_path) as conn:
        conn.execute(SCHEMA)
    app = Application(
        [DivisionService],
        tns=NAMESPACE,
        name="Division",
        in_protocol=Soap11(validator="lxml"),
        out_protocol=Soap11(),
    )
    server = make_server("127.0.0.1", args.port, WsgiApplication(app), handler_class=_Quiet)
    server.serve_forever()


if __name__ == "__main__":
    main()
