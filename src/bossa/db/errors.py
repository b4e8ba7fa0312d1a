"""Driver errors a user can cause, translated into bossa's typed errors.

PostgreSQL refuses some input only when it reaches a constraint or a column type: a
value out of range, a check that fails, a duplicate, a missing parent row. Those are the
caller's mistakes and must reach them as a 4xx or an exit-2 line, never a 500. The
server's own text is not passed on: `Failing row contains (...)` quotes the whole row,
secrets included, so the message names only the constraint or column.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from psycopg import errors as pg

from bossa.errors import Conflict, InvalidInput, UserError

__all__ = ["translate", "user_errors"]


def translate(exc: BaseException) -> UserError | None:
    """The user error behind a driver error, or None when it is not the user's doing."""
    if not isinstance(exc, pg.Error):
        return None
    diag = exc.diag
    where = diag.column_name or diag.constraint_name or diag.table_name
    if isinstance(exc, pg.UniqueViolation):
        return Conflict("already exists", field=diag.constraint_name or where)
    if isinstance(exc, pg.ForeignKeyViolation):
        return InvalidInput("refers to something that does not exist", field=where)
    if isinstance(exc, pg.CheckViolation):
        return InvalidInput("fails the check " + (diag.constraint_name or "on this value"))
    if isinstance(exc, pg.NotNullViolation):
        return InvalidInput("is required", field=where)
    if isinstance(exc, pg.NumericValueOutOfRange | pg.DatetimeFieldOverflow):
        return InvalidInput("is out of range", field=where)
    if isinstance(exc, pg.StringDataRightTruncation):
        return InvalidInput("is too long", field=where)
    if isinstance(exc, pg.CharacterNotInRepertoire | pg.UntranslatableCharacter):
        return InvalidInput("holds a character PostgreSQL cannot store", field=where)
    return None


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Re-raise a driver error the user caused as its typed `UserError`; others unchanged."""
    try:
        yield
    except pg.Error as exc:
        translated = translate(exc)
        if translated is None:
            raise
        raise translated from None
