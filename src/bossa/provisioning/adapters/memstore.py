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
from redis.exceptions import (
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
    WatchError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from bossa.provisioning.adapters.base import (
    Command,
    DeliveryError,
    Division,
    first_line,
    parsed,
    render,
)

__all__ = ["MARKER_TTL_S", "RedisAdapter", "marker_key"]

MARKER_TTL_S = 30 * 24 * 3600  # longer than any entry stays in a buffer


# A backup daemon's batch in one call, each command atomic on the server (a script runs
# alone): a command whose marker exists is skipped (0), otherwise its tokens run and its
# marker is set (1). Redis has no rollback, so a command refused half-way leaves its
# earlier tokens applied and no marker (as MULTI/EXEC would); its reply is the error text
# and the script goes on with the next command, which belongs to another contract.
_APPLY_BATCH = """
local ttl = ARGV[1]
local batch = cjson.decode(ARGV[2])
local replies = {}
for i, marker in ipairs(KEYS) do
    if redis.call('EXISTS', marker) == 1 then
        replies[i] = 0
    else
        local refused = nil
        for _, tokens in ipairs(batch[i][2]) do
            local reply = redis.pcall(unpack(tokens))
            if type(reply) == 'table' and reply.err then
                refused = reply.err
                break
            end
        end
        if refused then
            replies[i] = refused
        else
            redis.call('SET', marker, batch[i][1], 'EX', ttl)
            replies[i] = 1
        end
    end
end
return replies
"""

# Commands per script call: a script blocks the server while it runs, so a big batch is
# cut into calls of about a millisecond each.
SCRIPT_CHUNK = 250


#: Error replies that say the server cannot take any write now, whatever the command:
#: loading its data, a script or module busy, a replica (READONLY) or a primary that
#: lost its link (MASTERDOWN), a cluster in trouble, out of memory. Unreachable, not
#: refused: the division is down until a PING answers.
UNAVAILABLE_REPLIES = (
    "LOADING",
    "BUSY",
    "MASTERDOWN",
    "READONLY",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "OOM",
)


#: redis-py's classes for those replies (it rewrites a pipeline's error text, so the
#: reply's first word is not always there to read).
_UNAVAILABLE_CLASSES: tuple[type[Exception], ...] = (
    ReadOnlyError,
    OutOfMemoryError,
    TryAgainError,
    ClusterDownError,
)


def _refusal(text: str, exc: BaseException | None = None) -> DeliveryError:
    """An error reply as the buffer records it: the server's refusal of this command
    (ERRCODE REDIS), or unreachable when the reply says the server takes nothing now."""
    if isinstance(exc, _UNAVAILABLE_CLASSES) or (
        text.split(" ", 1)[0].upper() in UNAVAILABLE_REPLIES
    ):
        return DeliveryError("REDIS", text, unreachable=True)
    return DeliveryError("REDIS", text)


def marker_key(division: str, entry_id: int) -> str:
    return f"bossa:applied:{division}:{entry_id}"


class RedisAdapter:
    """Delivers a list of Redis commands as one MULTI/EXEC transaction."""

    def __init__(self, division: Division) -> None:
        if not division.server_url:
            raise ValueError(f"division {division.name} has no SERVER_URL")
        options: dict[str, Any] = {}
        if "username" in division.credentials:
            options["username"] = division.credentials["username"]
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
        self._apply = self._client.register_script(_APPLY_BATCH)

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
            raise _refusal(first_line(exc), exc) from exc
        failed = [r for r in results if isinstance(r, ResponseError)]
        if failed:
            # Redis has no rollback: the other commands took effect. Drop the marker so
            # a retry (after an operator's fix) applies the command again.
            self._forget(marker)
            raise _refusal(first_line(failed[0]), failed[0])

    def deliver_many(self, commands: list[Command]) -> dict[int, DeliveryError | None]:
        """A backup daemon's batch: one script call per SCRIPT_CHUNK commands (see
        _APPLY_BATCH), so a batch costs a round trip or two, not one per command."""
        results: dict[int, DeliveryError | None] = {}
        rendered: list[tuple[Command, list[list[str]]]] = []
        for command in commands:
            try:
                tokens = _tokens(command.template, command.bind_data)
            except (KeyError, IndexError, ValueError) as exc:
                results[command.entry_id] = DeliveryError("BIND", f"bind data lacks {exc}")
                continue
            except (TypeError, AttributeError) as exc:  # not a list of lists of strings
                results[command.entry_id] = DeliveryError("TEMPLATE", f"bad template: {exc}")
                continue
            rendered.append((command, tokens))
        for start in range(0, len(rendered), SCRIPT_CHUNK):
            chunk = rendered[start : start + SCRIPT_CHUNK]
            try:
                replies = self._apply(
                    keys=[marker_key(self.division.name, c.entry_id) for c, _ in chunk],
                    args=[
                        MARKER_TTL_S,
                        json.dumps([[c.entry_id, tokens] for c, tokens in chunk]),
                    ],
                )
            except (RedisConnectionError, RedisTimeoutError) as exc:
                down = DeliveryError("CONNECT", str(exc), unreachable=True)
                results.update(dict.fromkeys((c.entry_id for c, _ in rendered[start:]), down))
                break
            except ResponseError as exc:
                # The script itself stopped (out of memory, a script timeout): what ran
                # before holds its markers, so the retry of the whole chunk is safe.
                failure = _refusal(first_line(exc), exc)
                results.update(dict.fromkeys((c.entry_id for c, _ in chunk), failure))
                continue
            for (command, _), reply in zip(chunk, replies, strict=True):
                results[command.entry_id] = (
                    None if isinstance(reply, int) else _refusal(_text(reply))
                )
        return results

    def probe(self) -> None:
        """PING (a replica or a loading server answers it too: the next delivery then
        finds it unavailable again, and the daemon's probe backoff keeps growing)."""
        try:
            self._client.ping()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise DeliveryError("CONNECT", first_line(exc), unreachable=True) from exc
        except ResponseError as exc:
            error = _refusal(first_line(exc), exc)
            if error.unreachable:
                raise error from exc

    def close(self) -> None:
        self._client.close()

    def _forget(self, marker: str) -> None:
        with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
            self._client.delete(marker)


def _tokens(template: list[list[str]], bind_data: dict[str, Any]) -> list[list[str]]:
    """render() for a Redis template, flattened for speed (a backup daemon renders tens
    of thousands a second): every token a string, as Redis receives it. The template's
    tokens are sorted once (literal, one placeholder, text to format): the commands of a
    batch share their plan version's template object."""
    program = _programs.get(id(template))
    if program is None or program[0] is not template:
        if len(_programs) >= _PROGRAMS:
            _programs.clear()
        program = (template, _program(template))
        _programs[id(template)] = program
    return [
        [
            text
            if how == _LITERAL
            else str(bind_data[text])
            if how == _WHOLE
            else text.format_map(bind_data)
            for how, text in row
        ]
        for row in program[1]
    ]


_LITERAL, _WHOLE, _FORMAT = 0, 1, 2
#: Templates sorted by _program, by id (each entry holds its template, so the id cannot be
#: reused while it is here); bounded.
_programs: dict[int, tuple[Any, list[list[tuple[int, str]]]]] = {}
_PROGRAMS = 1024


def _program(template: list[list[str]]) -> list[list[tuple[int, str]]]:
    rows: list[list[tuple[int, str]]] = []
    for cmd in template:
        row: list[tuple[int, str]] = []
        for token in cmd:
            if not isinstance(token, str):  # a number in an edited payload: as deliver() sends it
                row.append((_LITERAL, str(token)))
                continue
            whole, formatted = parsed(token)
            if whole is not None:
                row.append((_WHOLE, whole))
            else:
                row.append((_FORMAT, token) if formatted else (_LITERAL, token))
        rows.append(row)
    return rows


def _text(reply: Any) -> str:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    lines = text.strip().splitlines()
    return lines[0] if lines else "refused"
