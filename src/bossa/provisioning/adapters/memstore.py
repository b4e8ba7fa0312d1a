"""In-memory store divisions (P3: the seed's MMDB; today Redis) through redis-py.

Once-only effect: WATCH a marker key, then MULTI, the commands, SET marker, EXEC. A
repeat finds the marker and stops; a concurrent twin makes EXEC fail and retries.
"""

from __future__ import annotations

import contextlib
import json
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


# Atomic on the server: a repeat finds the marker and does nothing. Redis has no
# rollback, so a command refused half-way leaves the earlier ones applied and no marker
# (as MULTI/EXEC would): the retry after an operator's fix applies the command again.
_APPLY_ONCE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for _, tokens in ipairs(cjson.decode(ARGV[2])) do
    local reply = redis.pcall(unpack(tokens))
    if type(reply) == 'table' and reply.err then return redis.error_reply(reply.err) end
end
redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[1])
return 1
"""


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
        self._apply = self._client.register_script(_APPLY_ONCE)

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

    def deliver_many(self, commands: list[Command]) -> dict[int, DeliveryError | None]:
        """A backup daemon's batch in one round trip: a pipeline of one Lua script call per
        command, each atomic on the server (marker checked, commands run, marker set)."""
        results: dict[int, DeliveryError | None] = {}
        calls: list[Command] = []
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for command in commands:
                    try:
                        tokens = [
                            [str(t) for t in cmd]
                            for cmd in render(command.template, command.bind_data)
                        ]
                    except (KeyError, IndexError, ValueError) as exc:
                        results[command.entry_id] = DeliveryError("BIND", f"bind data lacks {exc}")
                        continue
                    marker = marker_key(self.division.name, command.entry_id)
                    self._apply(
                        keys=[marker],
                        args=[MARKER_TTL_S, json.dumps(tokens), command.entry_id],
                        client=pipe,
                    )
                    calls.append(command)
                replies = pipe.execute(raise_on_error=False) if calls else []
        except (RedisConnectionError, RedisTimeoutError) as exc:
            down = DeliveryError("CONNECT", str(exc), unreachable=True)
            return dict.fromkeys((c.entry_id for c in commands), down)
        for command, reply in zip(calls, replies, strict=True):
            results[command.entry_id] = (
                DeliveryError("REDIS", _first_line(reply)) if isinstance(reply, Exception) else None
            )
        return results

    def close(self) -> None:
        self._client.close()

    def _forget(self, marker: str) -> None:
        with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
            self._client.delete(marker)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
