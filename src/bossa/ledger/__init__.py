"""The ledger: billing accounts, double-entry postings in minor units, balances, bills."""

from bossa.ledger.money import format_minor, to_minor
from bossa.ledger.store import Account, account, balances, check, create_account, post

__all__ = [
    "Account",
    "account",
    "balances",
    "check",
    "create_account",
    "format_minor",
    "post",
    "to_minor",
]
