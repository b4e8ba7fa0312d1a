"""Request limits, enforced before a body reaches FastAPI: size and JSON nesting.

An ASGI middleware rather than a FastAPI dependency, because a dependency runs after the
body was read whole: eight 50 MB bodies took the server from 116 MB to 856 MB. Here a
declared length over the limit is refused before a byte is read, and a body that grows
past it while streaming is refused at that point. JSON nesting is bounded so that what
is accepted can always be rendered back (a payload nested 300 deep was stored, then
every listing that showed it failed).
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bossa.errors import ErrorBody, InvalidInput, UserError

__all__ = ["RequestLimits", "json_depth"]

# JSON strings (with their escapes) hold no structure: drop them before counting brackets.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text (0 for a scalar)."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub(b'""', body)):
        if bracket in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


class _TooLarge(UserError):
    http_status = 413


class RequestLimits:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_json_depth: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _refuse(send, InvalidInput("is not a number", field="Content-Length"))
                return
            if int(declared) > self.max_body_bytes:
                await _refuse(send, self._too_large())
                return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await _refuse(send, self._too_large())
                return
            if not message.get("more_body", False):
                break
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if body and (kind == b"application/json" or kind.endswith(b"+json")):
            depth = json_depth(bytes(body))
            if depth > self.max_json_depth:
                reason = f"nests {depth} deep; at most {self.max_json_depth} levels are accepted"
                await _refuse(send, InvalidInput(reason, field="body"))
                return
        replayed: Message = {"type": "http.request", "body": bytes(body), "more_body": False}
        await self.app(scope, _replay([replayed], receive), send)

    def _too_large(self) -> UserError:
        return _TooLarge(
            f"is larger than {self.max_body_bytes} bytes (BOSSA_API_MAX_BODY_BYTES)", field="body"
        )


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def next_message() -> Message:
        return messages.pop(0) if messages else await receive()

    return next_message


async def _refuse(send: Send, exc: UserError) -> None:
    body = json.dumps(ErrorBody.of(exc).content()).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": exc.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
