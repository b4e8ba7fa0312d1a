"""The ledger: billing accounts, double-entry postings in minor units, balances, bills.

Other modules call the service functions below inside their own transactions. Their SQL
reads the ledger only through its published views (`ledger.billing_accounts`,
`ledger.book_balances`, `ledger.posted_transactions`, `ledger.transaction_postings`,
`ledger.issued_bills`) and writes it only through its published functions (`ledger.post`,
`ledger.issue_bill`); see sql/schema.sql.
"""

from bossa.ledger.models import (
    BOOK_LIMIT,
    DEPOSIT,
    MAX_MINOR,
    TEXT_PATTERN,
    WRITEOFF,
    Account,
    AccountRequest,
    AccountStatus,
    Book,
    PlainText,
    Recipe,
    available,
    check_text,
    format_minor,
    parse_model,
    to_minor,
)
from bossa.ledger.service import (
    account,
    balances,
    check,
    open_account,
    post,
    set_account_status,
)

__all__ = [
    "BOOK_LIMIT",
    "DEPOSIT",
    "MAX_MINOR",
    "TEXT_PATTERN",
    "WRITEOFF",
    "Account",
    "AccountRequest",
    "AccountStatus",
    "Book",
    "PlainText",
    "Recipe",
    "account",
    "available",
    "balances",
    "check",
    "check_text",
    "format_minor",
    "open_account",
    "parse_model",
    "post",
    "set_account_status",
    "to_minor",
]
