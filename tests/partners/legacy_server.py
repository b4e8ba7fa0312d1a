"""A stand-in legacy system for the partner tests, in its own process: an SMS centre
over REST (POST /send_sms) and a location server over SOAP 1.1 (POST /soap, operation
locate). Run as `python tests/partners/legacy_server.py --port N --log PATH`.

Each call is applied once per Idempotency-Key (REST) or messageId (SOAP) and appended to
the log file as a JSON line. A text or msisdn "FAIL" gets a 500 (SOAP: a Server fault);
"SLOW" answers after 2 s, so a client's timeout shows.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape

from lxml import etree

NS = "urn:bossa:legacy"
ENV = "http://schemas.xmlsoap.org/soap/envelope/"
_lock = threading.Lock()
_seen: set[str] = set()
_log_path = ""
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


def _apply(kind: str, key: str, params: dict[str, str]) -> bool:
    with _lock:
        if key in _seen:
            return False
        _seen.add(key)
        with open(_log_path, "a") as log:
            log.write(json.dumps({"kind": kind, "key": key, **params}) + "\n")
        return True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/send_sms":
            params = json.loads(data)
            if params.get("text") == "SLOW":
                time.sleep(2)
            if params.get("text") == "FAIL":
                self._answer(500, b'{"error":"down"}', "application/json")
                return
            key = self.headers.get("Idempotency-Key", "")
            _apply("sms", key, {"to": params["to"], "text": params["text"]})
            answer = json.dumps({"message_id": f"m-{abs(hash(key)) % 10**9}"}).encode()
            self._answer(200, answer, "application/json")
        elif self.path == "/soap":
            root = etree.fromstring(data, _PARSER)
            op = root.find(f"{{{ENV}}}Body")[0]
            params = {etree.QName(c).localname: c.text or "" for c in op}
            msisdn = params.get("msisdn", "")
            if msisdn == "SLOW":
                time.sleep(2)
            if msisdn == "FAIL":
                fault = (
                    f'<soapenv:Envelope xmlns:soapenv="{ENV}"><soapenv:Body><soapenv:Fault>'
                    "<faultcode>Server</faultcode><faultstring>down</faultstring>"
                    "</soapenv:Fault></soapenv:Body></soapenv:Envelope>"
                )
                self._answer(500, fault.encode(), "text/xml")
                return
            _apply("locate", params.get("messageId", ""), {"msisdn": msisdn})
            cell = "" if msisdn.startswith("0") else f"CELL-{msisdn[-3:]}"
            body = (
                f'<soapenv:Envelope xmlns:soapenv="{ENV}" xmlns:b="{NS}"><soapenv:Body>'
                f"<b:locateResponse><b:cell>{escape(cell)}</b:cell>"
                f"<b:found>{'true' if cell else 'false'}</b:found></b:locateResponse>"
                "</soapenv:Body></soapenv:Envelope>"
            )
            self._answer(200, body.encode(), "text/xml")
        else:
            self._answer(404, b"{}", "application/json")


def main() -> None:
    global _log_path
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    _log_path = args.log
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
