"""Errors a user can cause, typed so that every edge (CLI, HTTP) renders them the same way.

A `UserError` names the field and the reason; the CLI prints it on one line and exits 2,
the API answers it as a 4xx with the same text. Anything else is a bug and may show a
traceback.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

__all__ = [
    "ConfigError",
    "Conflict",
    "ErrorBody",
    "Forbidden",
    "InvalidInput",
    "NotFound",
    "Problem",
    "Unauthenticated",
    "UserError",
]


class UserError(Exception):
    """Something the caller did or asked for that cannot be done as asked."""

    http_status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}" if field else message)


class InvalidInput(UserError):
    """A value that fails validation; `field` says which one. When a request has several
    (an order with a bad SA_ID and bind data its plan does not use), `problems` holds
    every one, `field` the first, and the text names them all."""

    http_status = 422

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        problems: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message, field=field)
        self.problems = list(problems)

    @classmethod
    def every(cls, problems: Sequence[tuple[str, str]]) -> InvalidInput:
        """One error for every (field, reason) found: `field: reason; field: reason`."""
        if not problems:
            raise ValueError("no problems to report")
        (field, reason), *rest = problems
        text = "; ".join([reason, *(f"{f}: {r}" for f, r in rest)])
        return cls(text, field=field, problems=problems if rest else ())


class NotFound(UserError):
    """The thing named does not exist."""

    http_status = 404


class Conflict(UserError):
    """The request contradicts the current state (a replayed key with new content, ...)."""

    http_status = 409


class Unauthenticated(UserError):
    """No credential, or one that is unknown, expired or revoked."""

    http_status = 401


class Forbidden(UserError):
    """The credential is good but its role may not do this (or the thing belongs to
    another module: a provisioning lane cannot be written through the generic journal)."""

    http_status = 403


class ConfigError(UserError):
    """A setting that stops start-up; `field` is the environment variable's name."""


class Problem(BaseModel):
    """One of several problems of a request."""

    field: str
    reason: str


class ErrorBody(BaseModel):
    """How the API answers every error: the same text the CLI prints."""

    error: str = Field(description="The whole message, `field: reason` when a field is named")
    field: str | None = Field(description="The field, parameter or setting at fault, if one is")
    reason: str = Field(description="Why it was refused")
    problems: list[Problem] | None = Field(
        default=None,
        description="Every problem found, when there are several (`field` is the first)",
    )

    def content(self) -> dict[str, object]:
        """The answer's JSON: `problems` only when there are several."""
        return self.model_dump(exclude={"problems"} if self.problems is None else None)

    @classmethod
    def of(cls, exc: UserError) -> ErrorBody:
        problems = getattr(exc, "problems", None) or None
        return cls(
            error=str(exc),
            field=exc.field,
            reason=exc.reason,
            problems=None
            if problems is None
            else [Problem(field=f, reason=r) for f, r in problems],
        )
