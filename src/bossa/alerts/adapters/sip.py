"""SIP intake: a minimal application server (UDP and TCP) for diverted INVITEs.

The core network diverts a call the callee could not take (busy, no answer, unreachable)
to this server. It answers per RFC 3261 as a UAS that never accepts the call: the INVITE
server transaction (17.2.1) sends 100 Trying when the final answer is not ready within
100 ms (the RFC asks for one within 200 ms; at once when many answers are pending), then
the final answer (486 Busy Here for busy, the configured 4xx otherwise) once the missed
call is recorded; over UDP the final answer is retransmitted (Timer G, doubling to T2)
until the ACK (Timer H ends it), and a retransmitted INVITE gets the last response again
instead of a second missed call. The transaction is matched by the Via branch (RFC 3261
magic cookie) or, for older peers, by Call-ID, CSeq, From tag and the top Via (17.2.3).
OPTIONS gets 200 (proxies ping), CANCEL 200 (the INVITE is answered at once, so there is
nothing left to cancel), other methods 405. An INVITE whose callee or caller is missing
or not E.164 is answered 400 (by the daemon); a message that does not parse, or lacks
Via, Call-ID, CSeq, From or To, cannot be answered reliably and is dropped; both are
logged and counted.

Parsing is `sipmessage` (Spacinov, BSD; pure Python, typed, maintained): it splits the
message, parses URIs, name-addrs and Via. It does not frame TCP streams, so framing by
Content-Length is done here. What the diverted call means is read here too: the callee
from the topmost Diversion (RFC 5806) or from History-Info (RFC 7044, with the RFC 4458
cause), the caller from P-Asserted-Identity, else From.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

from sipmessage import URI, Address, Message, Request, Response, Via

from bossa.alerts import metrics
from bossa.alerts.models import Reason, reason_from_cause, reason_from_diversion
from bossa.logs import get_logger

__all__ = ["Diverted", "SipServer"]

log = get_logger("bossa.alerts.sip")

T1 = 0.5
T2 = 4.0
T4 = 5.0
MAX_MESSAGE = 65_535
#: Pending INVITEs beyond which 100 Trying goes at once instead of after 100 ms.
_TRYING_AT_ONCE = 8
_PHRASES = {
    100: "Trying",
    200: "OK",
    400: "Bad Request",
    405: "Method Not Allowed",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    500: "Server Internal Error",
    503: "Service Unavailable",
    603: "Decline",
}


@dataclass(frozen=True, slots=True)
class Diverted:
    """What a diverted INVITE says, before validation (numbers as the network wrote them)."""

    callee: str | None
    caller: str | None
    reason: Reason
    call_ref: str


#: Records the missed call; returns the final status and phrase to answer with.
InviteHandler = Callable[[Diverted], Awaitable[tuple[int, str]]]


def _user(value: str | None) -> str | None:
    """The number of a name-addr or URI (tel: or sip: user part)."""
    if not value:
        return None
    try:
        uri = Address.parse(value).uri if "<" in value else URI.parse(value)
    except ValueError:
        return None
    return _uri_user(uri)


def _uri_user(uri: URI) -> str | None:
    if uri.scheme == "tel":
        return uri.host or uri.user
    return uri.user


def read_diversion(request: Request, call_ref: str | None = None) -> Diverted:
    """What the diverted INVITE says; `call_ref` is its transaction key when known."""
    if call_ref is None:
        call_ref = _transaction_key(request)
    headers = request.headers
    callee: str | None = None
    reason = Reason.OTHER
    diversions = headers.getlist("Diversion")
    if diversions:
        # The topmost entry is the most recent diverting party: the phone that missed it.
        first = diversions[0].split(",")[0]
        try:
            address = Address.parse(first)
            callee = _uri_user(address.uri)
            reason = reason_from_diversion(address.parameters.get("reason"))
        except ValueError:
            callee = None
    elif history := [h for value in headers.getlist("History-Info") for h in value.split(",")]:
        previous: str | None = None
        for entry in history:
            try:
                address = Address.parse(entry.strip())
            except ValueError:
                continue
            params = address.uri.parameters
            cause = params.get("cause")
            if cause is None and "Reason=" in str(address.uri):
                text = unquote(str(address.uri).split("Reason=", 1)[1])
                cause = text.split("cause=", 1)[1].split(";")[0] if "cause=" in text else None
            if cause is not None:
                target = params.get("target")
                callee = unquote(target) if target else previous
                callee = _user(callee) if callee and ":" in callee else callee
                reason = reason_from_cause(cause)
            previous = str(address.uri)
    caller = _user(headers.get("P-Asserted-Identity")) or _user(headers.get("From"))
    return Diverted(callee, caller, reason, call_ref)


def _transaction_key(request: Request, via: Via | None = None) -> str:
    if via is None:
        via = Via.parse(request.headers["Via"].split(",")[0])
    branch = via.parameters.get("branch") or ""
    cseq = (request.headers.get("CSeq") or "").split()
    number = cseq[0] if cseq else ""
    if branch.startswith("z9hG4bK"):
        return f"{branch}|{via.host}:{via.port or ''}|{number}"
    from_tag = ""
    with contextlib.suppress(ValueError, KeyError):
        from_tag = Address.parse(request.headers["From"]).parameters.get("tag") or ""
    call_id = request.headers.get("Call-ID") or ""
    return f"{call_id}|{number}|{from_tag}|{via.host}:{via.port or ''}|{branch}"


def _response(request: Message, code: int, phrase: str, to_tag: str | None) -> bytes:
    lines = [f"SIP/2.0 {code} {phrase}"]
    headers = request.headers
    lines += [f"Via: {via}" for via in headers.getlist("Via")]
    to = headers.get("To") or ""
    if to_tag and code > 100 and ";tag=" not in to:
        to = f"{to};tag={to_tag}"
    for name, value in (
        ("From", headers.get("From") or ""),
        ("To", to),
        ("Call-ID", headers.get("Call-ID") or ""),
        ("CSeq", headers.get("CSeq") or ""),
    ):
        lines.append(f"{name}: {value}")
    lines += ["Server: bossa-alerts", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


@dataclass
class _Transaction:
    key: str
    last: bytes | None = None
    final: bool = False
    acked: bool = False
    send: Callable[[bytes], None] | None = None
    expires: float = field(default_factory=lambda: time.monotonic() + 64 * T1)
    retransmit: asyncio.TimerHandle | None = None


class SipServer:
    def __init__(self, host: str, port: int, on_invite: InviteHandler) -> None:
        self.host = host
        self.port = port
        self.on_invite = on_invite
        self._transactions: dict[str, _Transaction] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: INVITEs waiting for their final answer.
        self._pending = 0

    async def start(self, transports: list[str]) -> None:
        loop = asyncio.get_running_loop()
        if "udp" in transports:
            server = self

            class _Udp(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                    def send(payload: bytes) -> None:
                        if server._udp is not None:
                            server._udp.sendto(payload, addr)

                    server._received(data, send, reliable=False)

            transport, _ = await loop.create_datagram_endpoint(
                _Udp, local_addr=(self.host, self.port)
            )
            self._udp = transport
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # A burst of INVITEs must wait in the kernel, not be dropped, while the
                # loop records the ones before it.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        if "tcp" in transports:
            self._tcp = await asyncio.start_server(self._stream, self.host, self.port)
        self._reaper = asyncio.create_task(self._reap())
        log.info("alerts.sip_listening", host=self.host, port=self.port, transports=transports)

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        for tx in self._transactions.values():
            if tx.retransmit is not None:
                tx.retransmit.cancel()

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def send(payload: bytes) -> None:
            if not writer.is_closing():
                writer.write(payload)

        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if len(head) > MAX_MESSAGE:
                    break
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() in (b"content-length", b"l"):
                        length = int(value.strip() or b"0")
                if not 0 <= length <= MAX_MESSAGE:
                    break
                body = await reader.readexactly(length) if length else b""
                self._received(head + body, send, reliable=True)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except ValueError:  # a Content-Length that is not a number: the stream is lost
            metrics.INTAKE_REJECTED.labels("malformed").inc()
            log.warning("alerts.sip_bad_framing")
        finally:
            writer.close()

    def _received(self, data: bytes, send: Callable[[bytes], None], *, reliable: bool) -> None:
        if not data.strip():
            return  # keep-alive CRLF
        if data.startswith(b"ACK "):
            # Half of all datagrams are the ACKs of our final answers: matched to their
            # transaction from two header lines when that is unambiguous, without the
            # parser (a key that finds no transaction goes the long way, so a header
            # this reading gets wrong costs time, never a wrong match).
            tx = self._transactions.get(_fast_ack_key(data) or "")
            if tx is not None:
                self._acked(tx, reliable)
                return
        via: Via | None = None
        try:
            message = Message.parse(data)
            if isinstance(message, Request):
                _check_request(message)
                via = Via.parse(message.headers["Via"].split(",")[0])
        except (ValueError, KeyError, IndexError) as exc:
            metrics.INTAKE_REJECTED.labels("malformed").inc()
            log.warning("alerts.sip_malformed", error=str(exc)[:200], size=len(data))
            return
        if isinstance(message, Response):
            return  # this server sends no requests
        method = message.method
        if method == "INVITE":
            self._invite(message, send, reliable=reliable, via=via)
        elif method == "ACK":
            with contextlib.suppress(ValueError, KeyError):
                tx = self._transactions.get(_transaction_key(message, via))
                if tx is not None:
                    self._acked(tx, reliable)
        elif method in ("OPTIONS", "CANCEL"):
            send(_response(message, 200, "OK", _tag(message)))
        else:
            send(_response(message, 405, _PHRASES[405], _tag(message)))

    @staticmethod
    def _acked(tx: _Transaction, reliable: bool) -> None:
        tx.acked = True
        tx.expires = time.monotonic() + (0 if reliable else T4)
        if tx.retransmit is not None:
            tx.retransmit.cancel()

    def _invite(
        self,
        request: Request,
        send: Callable[[bytes], None],
        *,
        reliable: bool,
        via: Via | None = None,
    ) -> None:
        key = _transaction_key(request, via)
        tx = self._transactions.get(key)
        if tx is not None:
            metrics.SIP_RETRANSMISSIONS.inc()
            if tx.last is not None:
                send(tx.last)
            return
        tx = _Transaction(key, send=send)
        self._transactions[key] = tx
        task = asyncio.get_running_loop().create_task(self._answer(tx, request, reliable))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, tx: _Transaction, request: Request, reliable: bool) -> None:
        assert tx.send is not None
        tag = _tag(request)

        def trying() -> None:
            if not tx.final and tx.send is not None:
                tx.last = _response(request, 100, "Trying", None)
                tx.send(tx.last)

        # Normally 100 Trying only if recording takes over 100 ms; but with many answers
        # pending the loop or the database is behind, and a peer that hears nothing for
        # 500 ms retransmits its INVITE (Timer A), each copy costing a parse and an
        # answer just when time is shortest: then it goes at once.
        self._pending += 1
        delay = 0.0 if self._pending > _TRYING_AT_ONCE else 0.1
        timer = asyncio.get_running_loop().call_later(delay, trying)
        try:
            diverted = read_diversion(request, tx.key)
            code, phrase = await self.on_invite(diverted)
        except Exception:
            log.exception("alerts.sip_handler_failed")
            code, phrase = 500, _PHRASES[500]
        finally:
            timer.cancel()
            self._pending -= 1
        tx.final = True
        tx.last = _response(request, code, phrase, tag)
        tx.send(tx.last)
        tx.expires = time.monotonic() + 64 * T1
        if not reliable:
            # Timer G on the loop's timer heap: a task per transaction would cost a
            # coroutine and its scheduling for each call, most of them ACKed at once.
            tx.retransmit = asyncio.get_running_loop().call_later(T1, self._retransmit, tx, T1)

    @staticmethod
    def _retransmit(tx: _Transaction, interval: float) -> None:
        if tx.acked or tx.last is None or tx.send is None or time.monotonic() >= tx.expires:
            return
        tx.send(tx.last)
        interval = min(interval * 2, T2)
        tx.retransmit = asyncio.get_running_loop().call_later(
            interval, SipServer._retransmit, tx, interval
        )

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for key in [k for k, tx in self._transactions.items() if tx.final and tx.expires < now]:
                del self._transactions[key]


_FAST_VIA = re.compile(
    rb"^(?:Via|v)[ \t]*:[ \t]*SIP/2\.0/(?:UDP|TCP)[ \t]+([A-Za-z0-9.\-]+)(?::([0-9]{1,5}))?"
    rb"[ \t]*;(?:[^,\r\n]*;)?branch=(z9hG4bK[A-Za-z0-9.!%*_+`'~\-]+)[ \t]*(?:;[^,\r\n]*)?\r?$",
    re.IGNORECASE | re.MULTILINE,
)
_FAST_CSEQ = re.compile(rb"^CSeq[ \t]*:[ \t]*([0-9]{1,10})[ \t]+ACK[ \t]*\r?$", re.MULTILINE)


def _fast_ack_key(data: bytes) -> str | None:
    """The transaction key of a plain ACK (one Via line of an RFC 3261 branch), as
    `_transaction_key` makes it; None when the message is not that plain."""
    head = data.split(b"\r\n\r\n", 1)[0]
    vias = _FAST_VIA.findall(head)
    cseq = _FAST_CSEQ.findall(head)
    if len(vias) != 1 or len(cseq) != 1 or head.lower().count(b"\nvia") + head.count(b"\nv:") != 1:
        return None
    host, port, branch = vias[0]
    return f"{branch.decode()}|{host.decode()}:{port.decode()}|{cseq[0].decode()}"


def _check_request(request: Request) -> None:
    for name in ("Via", "Call-ID", "CSeq", "From", "To"):
        if not request.headers.get(name):
            raise ValueError(f"no {name}")


def _tag(request: Message) -> str:
    """A To tag that is the same for every retransmission of one request."""
    seed = ((request.headers.get("Call-ID") or "") + (request.headers.get("Via") or "")).encode()
    return hashlib.sha256(seed).hexdigest()[:16]
