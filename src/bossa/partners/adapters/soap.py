"""SOAP 1.1 legacy systems through httpx and lxml: the operation is an element in the
`urn:bossa:legacy` namespace whose children are the parameters; the answer's first body
element's children are the results (text). Faults are refusals.

Why not zeep (provisioning uses it): zeep reads a WSDL first and is synchronous; the
runs call these systems on the API's event loop, with one request per call and a
timeout, and the messages are flat. The XML parser resolves no entities and fetches
nothing from the network.
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

import httpx
from lxml import etree

from bossa.partners.adapters.base import LegacyError

__all__ = ["NAMESPACE", "SoapSystem"]

NAMESPACE = "urn:bossa:legacy"
_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, huge_tree=False, remove_blank_text=True
)


def envelope(operation: str, params: dict[str, Any]) -> bytes:
    parts = "".join(
        f"<b:{name}>{escape(_text(value))}</b:{name}>" for name, value in params.items()
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><soapenv:Envelope xmlns:soapenv="{_ENV}" '
        f'xmlns:b="{NAMESPACE}"><soapenv:Body><b:{operation}>{parts}</b:{operation}>'
        "</soapenv:Body></soapenv:Envelope>"
    ).encode()


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class SoapSystem:
    def __init__(self, url: str, *, timeout_s: float) -> None:
        self._url = url
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def call(
        self, operation: str, params: dict[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        body = envelope(operation, {**params, "messageId": idempotency_key})
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": operation}
        try:
            response = await self._client.post(self._url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise LegacyError("TIMEOUT", type(exc).__name__, unreachable=True) from None
        except httpx.TransportError as exc:
            raise LegacyError("CONNECT", type(exc).__name__, unreachable=True) from None
        try:
            root = etree.fromstring(response.content, _PARSER)
        except etree.XMLSyntaxError:
            unreachable = response.status_code >= 500
            raise LegacyError(
                f"HTTP{response.status_code}", "not a SOAP answer", unreachable=unreachable
            ) from None
        body_el = root.find(f"{{{_ENV}}}Body")
        if body_el is None or len(body_el) == 0:
            raise LegacyError("BAD_ANSWER", "no SOAP body", unreachable=False)
        answer = body_el[0]
        if answer.tag == f"{{{_ENV}}}Fault":
            code = (answer.findtext("faultcode") or "Fault").strip()[:64]
            reason = (answer.findtext("faultstring") or "").strip()[:200]
            # A server fault says the system failed; a client fault refuses the request.
            raise LegacyError(code, reason, unreachable=code.startswith(("Server", "soap:Server")))
        return {etree.QName(child).localname: (child.text or "") for child in answer}

    async def close(self) -> None:
        await self._client.aclose()
