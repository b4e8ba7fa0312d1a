"""The pure rules: numbers, SMS encoding and concatenation, receipt id matching."""

from __future__ import annotations

import pytest

from bossa.alerts.models import (
    encode_sms,
    message_id_keys,
    normalize_number,
    parse_receipt,
    receipt_id_keys,
    uplink_code,
)
from bossa.errors import InvalidInput


@pytest.mark.parametrize(
    ("raw", "digits"),
    [
        ("+8613800000001", "8613800000001"),
        ("tel:+82-10-1234-5678", "821012345678"),
        ("sip:+441632960001@ims;user=phone", "441632960001"),
    ],
)
def test_numbers_normalise_to_e164(raw: str, digits: str) -> None:
    assert normalize_number(raw, field="callee") == digits


@pytest.mark.parametrize("raw", [None, "", "anonymous", "0138", "+0123456789", "1" * 16])
def test_numbers_that_are_not_e164_name_the_field(raw: str | None) -> None:
    with pytest.raises(InvalidInput) as caught:
        normalize_number(raw, field="callee")
    assert caught.value.field == "callee"


def test_gsm7_single_and_concatenated_without_splitting_an_escape() -> None:
    assert encode_sms("a" * 160, 1).parts == [b"a" * 160]
    text = "a" * 152 + "€" + "b" * 10  # the euro sign is an escape pair at 152-153
    sms = encode_sms(text, 7)
    assert sms.data_coding == 0
    assert sms.esm_class == 0x40
    bodies = [part[6:] for part in sms.parts]
    assert [part[:6] for part in sms.parts] == [
        bytes([5, 0, 3, 7, 2, 1]),
        bytes([5, 0, 3, 7, 2, 2]),
    ]
    assert b"".join(bodies).decode("gsm03.38") == text
    assert all(len(body) <= 153 for body in bodies)
    assert not bodies[0].endswith(b"\x1b")


def test_ucs2_concatenation_keeps_surrogate_pairs_whole() -> None:
    text = "你" * 66 + "😀" + "好" * 10
    sms = encode_sms(text, 300)
    assert sms.data_coding == 8
    bodies = [part[6:] for part in sms.parts]
    assert b"".join(bodies).decode("utf-16-be") == text
    assert all(len(body) <= 134 for body in bodies)
    assert sms.parts[0][3] == 300 % 256
    assert encode_sms("你好" * 35, 1).parts == ["你好".encode("utf-16-be") * 35]


def test_receipt_ids_match_whatever_the_case_or_base() -> None:
    response = "00000000FF"
    for receipt in ("255", "ff", "00000000ff", "FF"):
        assert set(receipt_id_keys(receipt)) & set(message_id_keys(response)), receipt
    assert not set(receipt_id_keys("254")) & set(message_id_keys(response))
    text = "id:255 sub:001 dlvrd:001 submit date:2611291200 done date:2611291201 stat:DELIVRD"
    assert parse_receipt(text + " err:000 text:") == ("255", "DELIVRD")


def test_uplink_code_needs_exactly_one_code() -> None:
    assert uplink_code("WHO 123456") == "123456"
    assert uplink_code("123456 654321") is None
    assert uplink_code("1234567") is None


def test_the_ascii_fast_path_is_gsm() -> None:
    from bossa.alerts.models import GSM_AS_ASCII

    every = "".join(sorted(GSM_AS_ASCII))
    assert every.encode("gsm03.38") == every.encode("ascii")
    for other in "$@[\\]^_`{|}~":
        assert other not in GSM_AS_ASCII
    text = "Missed call: +8613900000001 called you 3 time(s), last at 11-29 14:02."
    assert encode_sms(text, 1).parts == [text.encode("gsm03.38")]
    assert encode_sms("price $5 @home", 1).parts == ["price $5 @home".encode("gsm03.38")]
