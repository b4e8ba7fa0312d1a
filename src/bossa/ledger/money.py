"""Money as integers of minor units, parsed from what people type, never a float."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from bossa.errors import InvalidInput

__all__ = ["format_minor", "to_minor"]


def to_minor(value: object, exponent: int, *, field: str = "amount", currency: str = "") -> int:
    """'12.50' in a 2-decimal currency -> 1250. Refuses floats, zero, negatives, and more
    decimals than the currency has."""
    if isinstance(value, (bool, float)):
        raise InvalidInput("must be a decimal string or an integer, not a float", field=field)
    try:
        amount = Decimal(str(value).strip()) if isinstance(value, str | int | Decimal) else None
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite():
        raise InvalidInput(f"{value!r} is not an amount", field=field)
    if amount <= 0:
        raise InvalidInput("must be greater than zero", field=field)
    if amount.adjusted() > 15:  # before any scaling: '1e300000' is a few typed characters
        raise InvalidInput("is too large", field=field)
    exponent_of_value = amount.as_tuple().exponent
    assert isinstance(exponent_of_value, int)
    if -exponent_of_value > exponent:
        raise InvalidInput(
            f"has more decimals than {currency or 'the currency'} has ({exponent})", field=field
        )
    minor = int(amount.scaleb(exponent))
    if minor > 10**15:
        raise InvalidInput("is too large", field=field)
    return minor


def format_minor(minor: int, exponent: int) -> str:
    if exponent == 0:
        return str(minor)
    sign = "-" if minor < 0 else ""
    whole, fraction = divmod(abs(minor), 10**exponent)
    return f"{sign}{whole}.{fraction:0{exponent}d}"
