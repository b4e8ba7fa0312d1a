"""SOAP divisions (P3: the seed's web service) through zeep.

Once-only effect: every operation gets the entry id as its `messageId` parameter and
the receiver deduplicates on it (our test server does; integrators are told to).
"""

from __future__ import annotations

import threading
from typing import Any

import requests
import zeep
import zeep.exceptions
from zeep.transports import Transport

from bossa.provisioning.adapters.base import (
    UNAVAILABLE_HTTP,
    Command,
    DeliveryError,
    Division,
    render,
)

__all__ = ["MESSAGE_ID_PARAM", "SoapAdapter"]

MESSAGE_ID_PARAM = "messageId"


class SoapAdapter:
    """Calls `operation(**params, messageId=entry id)` on the division's WSDL service."""

    def __init__(self, division: Division) -> None:
        if not division.server_url:
            raise ValueError(f"division {division.name} has no SERVER_URL")
        self.division = division
        self._session = requests.Session()
        user = division.credentials.get("username")
        if user is not None:
            self._session.auth = (user, division.credentials.get("password", ""))
        self._client: Any = None  # the WSDL is read on first delivery: the server may be down now
        self._lock = threading.Lock()

    def deliver(self, command: Command) -> None:
        template = render(command.template, command.bind_data)
        params = dict(template.get("params") or {})
        params[MESSAGE_ID_PARAM] = str(command.entry_id)
        try:
            client = self._connect()
            try:
                operation = client.service[template["operation"]]
            except AttributeError as exc:
                raise DeliveryError("SOAP_OPERATION", str(exc)) from exc
            operation(**params)
        except zeep.exceptions.Fault as exc:
            raise DeliveryError(_fault_code(exc.code), str(exc.message)) from exc
        except zeep.exceptions.TransportError as exc:
            raise DeliveryError(
                f"HTTP{exc.status_code}",
                _clip(exc.content or exc.message),
                unreachable=exc.status_code in UNAVAILABLE_HTTP,
            ) from exc
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise DeliveryError("CONNECT", str(exc), unreachable=True) from exc
        except (zeep.exceptions.Error, TypeError, ValueError) as exc:  # bad params or reply
            raise DeliveryError("SOAP", _clip(str(exc))) from exc

    def probe(self) -> None:
        """A GET of the WSDL: any answer but 429/502/503/504 means the server is there."""
        url = self.division.server_url or ""
        try:
            response = self._session.get(url, timeout=self.division.timeout_s)
        except requests.RequestException as exc:
            raise DeliveryError("CONNECT", _clip(str(exc)), unreachable=True) from exc
        if response.status_code in UNAVAILABLE_HTTP:
            raise DeliveryError(
                f"HTTP{response.status_code}", _clip(response.text), unreachable=True
            )

    def close(self) -> None:
        self._session.close()

    def _connect(self) -> Any:
        with self._lock:
            if self._client is None:
                timeout = self.division.timeout_s
                transport = Transport(  # type: ignore[no-untyped-call]
                    session=self._session, timeout=timeout, operation_timeout=timeout
                )
                self._client = zeep.Client(  # type: ignore[no-untyped-call]
                    self.division.server_url, transport=transport
                )
            return self._client


def _fault_code(code: Any) -> str:
    # A faultcode is a QName; its prefix is the server's choice, the local part is the code.
    return str(code or "Fault").rpartition(":")[2] or "Fault"


def _clip(value: Any) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text[:500]
