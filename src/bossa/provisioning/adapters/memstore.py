"""In-memory store divisions (P3: the seed's MMDB; today Redis) through redis-py.

Once-only effect: WATCH a marker key, then MULTI, the commands, SET marker, EXEC. A
repeat finds the marker and stops; a concurrent twin makes EXEC fail and retries.
"""

from __future__ import annotations

import contextlib
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from bossa.provisioning.adapters.base import Command, DeliveryError, Division, render

__all__ = ["MARKER_TTL_S", "RedisAdapter", "marker_key"]

MARKER_TTL_S = 30 * 24 * 3600  # longer than any entry stays in a buffer


def marker_key(division: str, entry_id: int) -> str:
    return f"bossa:applied:{division}:{entry_id}"


class RedisAdapter:
    """Delivers a list of Redis commands as one MULTI/EXEC transaction."""

    def __init__(self, division: Division) -> None:
        if not division.server_url:
            raise ValueError(f"division {division.name} has no SERVER_URL")
        options: dict[str, Any] = {}
        if "password" in division.credentials:
            options["password"] = division.credentials["password"]
        self.division = division
        # One quick retry heals a pooled connection the server dropped on restart; the
        # journal worker owns the real retry schedule, so no backoff here.
        self._client: redis.Redis = redis.Redis.from_url(
            division.server_url,
            socket_timeout=division.timeout_s,
            socket_connect_timeout=division.timeout_s,
            retry=Retry(NoBackoff(), 1),
            **options,
        )

    def deliver(self, command: Command) -> None:
        commands: list[list[Any]] = render(command.template, command.bind_data)
        marker = marker_key(self.division.name, command.entry_id)
        try:
            with self._client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        pipe.watch(marker)  # type: ignore[no-untyped-call]
                        if pipe.exists(marker):
                            return  # applied before: the repeat is a no-op
                        pipe.multi()
                        for tokens in commands:
                            pipe.execute_command(*tokens)  # type: ignore[no-untyped-call]
                        pipe.set(marker, command.entry_id, ex=MARKER_TTL_S)
                        results = pipe.execute(raise_on_error=False)
                        break
                    except WatchError:
                        continue  # a twin delivery touched the marker: look again
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise DeliveryError("CONNECT", str(exc), unreachable=True) from exc
        except ResponseError as exc:  # EXECABORT: a command was refused, nothing applied
            raise DeliveryError("REDIS", _first_line(exc)) from exc
        failed = [r for r in results if isinstance(r, ResponseError)]
        if failed:
            # Redis has no rollback: the other commands took effect. Drop the marker so
            # a retry (after an operator's fix) applies the command again.
            self._forget(marker)
            raise DeliveryError("REDIS", _first_line(failed[0]))

    def close(self) -> None:
        self._client.close()

    def _forget(self, marker: str) -> None:
        with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
            self._client.delete(marker)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
