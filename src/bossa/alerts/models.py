"""Missed-call alerts: the typed records and the pure rules (no I/O).

A missed call is what the core network reports when it diverts a call that the callee
could not take (busy, no answer, unreachable). The rules here decide who gets which
message (SPEC M2, M3), render it in the subscriber's language, encode it for SMPP (GSM
7-bit or UCS-2, split with a concatenation header when long), match delivery receipts to
submitted messages whatever the case or base of the message id, and verify an uplink
reply (M4).
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from enum import IntEnum, StrEnum
from typing import Annotated, Any

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)
from pydantic import BaseModel, ConfigDict, Field

from bossa.errors import InvalidInput

__all__ = [
    "LANGUAGES",
    "SMS_KIND",
    "CallView",
    "History",
    "Language",
    "MessageKind",
    "MissedCall",
    "MissedCallRequest",
    "NoticeView",
    "QuotaRequest",
    "Reason",
    "Recorded",
    "SmsOrder",
    "SmsParts",
    "SubscriberRequest",
    "SubscriberView",
    "TrialRangeRequest",
    "TrialSet",
    "encode_sms",
    "in_trial",
    "message_id_keys",
    "new_code",
    "normalize_number",
    "parse_receipt",
    "reason_from_cause",
    "reason_from_diversion",
    "receipt_id_keys",
    "render",
    "uplink_code",
]

#: An international number without its '+': country code first, 7 to 15 digits (E.164).
_E164 = re.compile(r"^[1-9][0-9]{6,14}$")
#: What a SIP URI or a tel URI may wrap around the number.
_NUMBER_IN = re.compile(r"^(?:tel:|sips?:)?\+?(?P<digits>[0-9][0-9\-.() ]*)(?:[@;].*)?$")

#: The journal kind of an SMS to send.
SMS_KIND = "sms"


def normalize_number(value: str | None, *, field: str) -> str:
    """The E.164 digits of a number (as a SIP user part, a tel URI or plain digits, with
    or without '+' and visual separators); InvalidInput naming `field` otherwise."""
    if value is None or not value.strip():
        raise InvalidInput("is missing", field=field)
    match = _NUMBER_IN.match(value.strip())
    digits = re.sub(r"[\-.() ]", "", match["digits"]) if match else ""
    if not _E164.match(digits):
        raise InvalidInput("is not an E.164 number (country code and 7 to 15 digits)", field=field)
    return digits


class Reason(StrEnum):
    """Why the call was diverted to bossa."""

    BUSY = "busy"
    NO_ANSWER = "no-answer"
    UNREACHABLE = "unreachable"
    UNCONDITIONAL = "unconditional"
    OTHER = "other"


_DIVERSION_REASONS = {
    # RFC 5806 Diversion reasons.
    "user-busy": Reason.BUSY,
    "no-answer": Reason.NO_ANSWER,
    "unavailable": Reason.UNREACHABLE,
    "out-of-service": Reason.UNREACHABLE,
    "unconditional": Reason.UNCONDITIONAL,
    "time-of-day": Reason.OTHER,
    "do-not-disturb": Reason.BUSY,
    "deflection": Reason.OTHER,
    "follow-me": Reason.OTHER,
    "away": Reason.UNREACHABLE,
    "unknown": Reason.OTHER,
}

# RFC 4458 cause values carried in History-Info (cause=486 and so on).
_CAUSES = {
    486: Reason.BUSY,
    408: Reason.NO_ANSWER,
    480: Reason.NO_ANSWER,
    487: Reason.NO_ANSWER,
    404: Reason.UNREACHABLE,
    503: Reason.UNREACHABLE,
    302: Reason.UNCONDITIONAL,
}


def reason_from_diversion(value: str | None) -> Reason:
    if not value:
        return Reason.OTHER
    return _DIVERSION_REASONS.get(value.strip().strip('"').lower(), Reason.OTHER)


def reason_from_cause(value: str | None) -> Reason:
    try:
        return _CAUSES.get(int(value or ""), Reason.OTHER)
    except ValueError:
        return Reason.OTHER


@dataclass(frozen=True, slots=True)
class MissedCall:
    """One missed call as received. `call_ref` is the intake's idempotency key (the SIP
    Call-ID with the INVITE's branch and CSeq, or the HTTP caller's reference): the same
    request received twice is one missed call. `id` is assigned at intake and is the
    row's primary key, so replaying the spool can never insert it twice."""

    caller: str
    callee: str
    reason: Reason
    called_at: datetime
    via: str
    call_ref: str
    id: uuid.UUID = field(default_factory=uuid.uuid4)

    def to_record(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "caller": self.caller,
            "callee": self.callee,
            "reason": self.reason.value,
            "called_at": self.called_at.isoformat(),
            "via": self.via,
            "call_ref": self.call_ref,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> MissedCall:
        return cls(
            caller=str(record["caller"]),
            callee=str(record["callee"]),
            reason=Reason(record["reason"]),
            called_at=datetime.fromisoformat(str(record["called_at"])),
            via=str(record["via"]),
            call_ref=str(record["call_ref"]),
            id=uuid.UUID(str(record["id"])),
        )


class MessageKind(IntEnum):
    """SPEC M2/M3: 1 while the database is down, 2 to a registered callee (or after a
    verified uplink), 3 to an unregistered callee in the trial set."""

    OUTAGE = 1
    REGISTERED = 2
    TRIAL = 3


class Language(StrEnum):
    EN = "en"
    ZH = "zh"
    KO = "ko"


LANGUAGES = tuple(lang.value for lang in Language)

# Messages 1 and 2 carry the caller, the time and the count; message 3 withholds the
# caller and advertises the service, with the code to reply for message 2 (M4).
_TEMPLATES: dict[Language, dict[MessageKind, str]] = {
    Language.EN: {
        MessageKind.OUTAGE: "Missed call: {caller} called you {count} time(s), last at {last}.",
        MessageKind.REGISTERED: "Missed call: {caller} called you {count} time(s), last at {last}.",
        MessageKind.TRIAL: "You missed {count} call(s), last at {last}. Reply {code} within "
        "{hours} h to see who called. Subscribe to Missed Call Alerts and never miss a call.",
    },
    Language.ZH: {
        MessageKind.OUTAGE: "漏话提醒：{caller}于{last}呼叫您{count}次。",
        MessageKind.REGISTERED: "漏话提醒：{caller}于{last}呼叫您{count}次。",
        MessageKind.TRIAL: "您有{count}个未接来电，最近一次在{last}。{hours}小时内回复{code}"
        "即可查看来电号码。开通漏话提醒业务，不再错过任何来电。",
    },
    Language.KO: {
        MessageKind.OUTAGE: "부재중 전화: {caller}님이 {count}회 전화했습니다. 마지막 {last}.",
        MessageKind.REGISTERED: "부재중 전화: {caller}님이 {count}회 전화했습니다. 마지막 {last}.",
        MessageKind.TRIAL: "부재중 전화 {count}통, 마지막 {last}. {hours}시간 안에 {code}(으)로 "
        "회신하면 발신 번호를 알려드립니다. 부재중 알림 서비스에 가입하세요.",
    },
}


def render(
    kind: MessageKind,
    lang: Language,
    *,
    caller: str,
    count: int,
    last_at: datetime,
    zone: tzinfo,
    code: str = "",
    hours: int = 24,
) -> str:
    last = last_at.astimezone(zone).strftime("%m-%d %H:%M")
    return _TEMPLATES[lang][kind].format(
        caller="+" + caller, count=count, last=last, code=code, hours=hours
    )


def new_code() -> str:
    """A six-digit reply code: guessing it for someone else's offer is 1 in a million per
    try, and an offer allows only `uplink_attempts` tries."""
    return f"{secrets.randbelow(1_000_000):06d}"


_CODE_IN = re.compile(r"(?<![0-9])([0-9]{6})(?![0-9])")


def uplink_code(text: str) -> str | None:
    """The reply code in an uplink text, if it holds exactly one."""
    found = _CODE_IN.findall(text)
    return found[0] if len(found) == 1 else None


def in_trial(number: str, prefixes: list[str]) -> bool:
    return any(number.startswith(prefix) for prefix in prefixes)


# -- SMS encoding ------------------------------------------------------------------------

#: data_coding: the SMSC default alphabet (GSM 03.38, unpacked septets) and UCS-2.
DC_GSM7 = 0x00
DC_UCS2 = 0x08
#: esm_class with the UDH indicator set.
ESM_UDHI = 0x40


@dataclass(frozen=True, slots=True)
class SmsParts:
    data_coding: int
    #: Each part as it goes in short_message (with its UDH when there is more than one).
    parts: list[bytes]

    @property
    def esm_class(self) -> int:
        return ESM_UDHI if len(self.parts) > 1 else 0


#: Characters whose GSM 03.38 default-alphabet code is their ASCII code ($, @, [, \, ], ^,
#: _, `, {, |, }, ~ are not: they sit elsewhere or in the extension table).
GSM_AS_ASCII = frozenset(
    "\n\r !\"#%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


def _gsm_chunks(encoded: bytes, size: int) -> list[bytes]:
    chunks: list[bytes] = []
    start = 0
    while start < len(encoded):
        end = min(start + size, len(encoded))
        # Never split an escape (0x1B) from the character it escapes.
        if end < len(encoded) and encoded[end - 1] == 0x1B:
            end -= 1
        chunks.append(encoded[start:end])
        start = end
    return chunks


def _ucs2_chunks(encoded: bytes, size: int) -> list[bytes]:
    chunks: list[bytes] = []
    start = 0
    while start < len(encoded):
        end = min(start + size, len(encoded))
        # Never split a surrogate pair (a character outside the BMP is four bytes).
        if end < len(encoded) and 0xD8 <= encoded[end - 2] <= 0xDB:
            end -= 2
        chunks.append(encoded[start:end])
        start = end
    return chunks


def encode_sms(text: str, reference: int) -> SmsParts:
    """GSM 7-bit when every character is in GSM 03.38 (160 septets in one message, 153 per
    part), UCS-2 otherwise (70 characters, 67 per part). Parts carry the 8-bit-reference
    concatenation header (IEI 0x00) with `reference` mod 256; the handset reassembles
    them by (sender, reference), so a subscriber's consecutive long messages need
    different references."""
    try:
        # Most alerts are plain ASCII letters, digits and punctuation, whose GSM 03.38
        # codes are their ASCII codes: encoded by the C codec, not character by character.
        encoded = text.encode("ascii") if GSM_AS_ASCII.issuperset(text) else text.encode("gsm03.38")
        coding, single, size, chunks = DC_GSM7, 160, 153, _gsm_chunks
    except UnicodeEncodeError:
        encoded = text.encode("utf-16-be")
        coding, single, size, chunks = DC_UCS2, 140, 134, _ucs2_chunks
    if len(encoded) <= single:
        return SmsParts(coding, [encoded])
    pieces = chunks(encoded, size)
    if len(pieces) > 255:
        raise InvalidInput("is too long for one concatenated SMS", field="text")
    ref = reference % 256
    return SmsParts(
        coding,
        [bytes([5, 0, 3, ref, len(pieces), n]) + piece for n, piece in enumerate(pieces, 1)],
    )


# -- delivery receipts ---------------------------------------------------------------------

_RECEIPT = re.compile(r"\bid:(?P<id>[0-9A-Za-z\-]+)\b.*?\bstat:(?P<stat>[A-Za-z]+)", re.DOTALL)


def parse_receipt(text: str) -> tuple[str, str] | None:
    """(message id, final state) of an SMPP 3.4 appendix B receipt text."""
    match = _RECEIPT.search(text)
    return (match["id"], match["stat"].upper()) if match else None


def _strip(value: str) -> str:
    return value.lower().lstrip("0") or "0"


def message_id_keys(message_id: str) -> list[str]:
    """The keys under which a submit_sm_resp id is kept: the id itself (any case, leading
    zeros ignored) and its value read as hexadecimal and as decimal, for SMSCs that write
    the receipt's id in another base than the response's."""
    keys = [f"s:{_strip(message_id)}"]
    if re.fullmatch(r"[0-9A-Fa-f]{1,32}", message_id):
        keys.append(f"h:{int(message_id, 16)}")
    if re.fullmatch(r"[0-9]{1,40}", message_id):
        keys.append(f"d:{int(message_id, 10)}")
    return keys


def receipt_id_keys(receipt_id: str) -> list[str]:
    """The keys to look a receipt's id up by, best first: the same string, then the same
    number written in the other base (receipt in decimal for a hexadecimal response id,
    and the reverse)."""
    keys = [f"s:{_strip(receipt_id)}"]
    if re.fullmatch(r"[0-9]{1,40}", receipt_id):
        keys.append(f"h:{int(receipt_id, 10)}")
    if re.fullmatch(r"[0-9A-Fa-f]{1,32}", receipt_id):
        keys.append(f"d:{int(receipt_id, 16)}")
    return keys


# -- the journal payload -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmsOrder:
    """An SMS to submit: the SMS lane's payload (key: the destination, so a subscriber's
    messages go out in order)."""

    notice_id: int
    to: str
    text: str
    kind: MessageKind

    def to_payload(self) -> dict[str, Any]:
        return {
            "notice_id": self.notice_id,
            "to": self.to,
            "text": self.text,
            "kind": int(self.kind),
        }

    @classmethod
    def from_entry(cls, payload: Any) -> SmsOrder:
        if not isinstance(payload, dict):
            raise TypeError("an SMS order is a JSON object")
        try:
            return cls(
                notice_id=int(payload["notice_id"]),
                to=normalize_number(str(payload["to"]), field="to"),
                text=str(payload["text"]),
                kind=MessageKind(int(payload["kind"])),
            )
        except (KeyError, TypeError, InvalidInput) as exc:
            raise ValueError(f"not an SMS order: {exc}") from exc


def utcnow() -> datetime:
    return datetime.now(UTC)


# -- typed requests and views (API and CLI) -----------------------------------------------

#: A number as the caller may write it (normalised and checked by the service).
NumberText = Annotated[str, Field(min_length=1, max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MissedCallRequest(_Strict):
    """A missed call reported over HTTP by a network that does not divert to SIP."""

    caller: NumberText
    callee: NumberText
    reason: Reason = Reason.OTHER
    #: The reporter's id of the call: the same reference twice is one missed call.
    reference: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[!-~]+$")]
    called_at: datetime | None = None


class Recorded(BaseModel):
    id: uuid.UUID
    #: False when this reference was recorded already (nothing was added).
    recorded: bool


class SubscriberRequest(_Strict):
    lang: Language = Language.EN


class SubscriberView(BaseModel):
    msisdn: str
    lang: Language
    created_at: datetime


class TrialRangeRequest(_Strict):
    prefix: Annotated[str, Field(pattern=r"^[1-9][0-9]{0,14}$")]


class QuotaRequest(_Strict):
    quota: Annotated[int, Field(ge=0, le=100_000_000)]


class TrialSet(BaseModel):
    ranges: list[str]
    quota: int
    members: int
    changed_at: datetime
    changed_by: str


class CallView(BaseModel):
    id: uuid.UUID
    caller: str
    reason: Reason
    called_at: datetime
    via: str
    spooled: bool
    notice_id: int | None


class NoticeView(BaseModel):
    id: int
    kind: MessageKind
    caller: str
    calls: int
    last_at: datetime
    created_at: datetime
    submitted_at: datetime | None
    delivered_at: datetime | None
    receipt_stat: str | None


class History(BaseModel):
    callee: str
    calls: list[CallView]
    notices: list[NoticeView]
