"""A failure that is not the entry's fault (`Failure(counted=False)`: its target could not
be reached) gives the attempt back, is recorded with `"counted": false`, and never
parks the entry however often it happens; a counted failure still parks after the
lane's attempts (issue 13)."""

from __future__ import annotations

import asyncio

from bossa.journal import EntryState, Failure, Journal, NewEntry
from bossa.journal import service as journal_service


async def test_uncounted_failures_never_park_and_counted_ones_still_do(journal: Journal) -> None:
    max_attempts = journal.settings.max_attempts
    head, behind = await journal.enqueue(
        [NewEntry("l", "k", {"n": 0}, key="SA-1"), NewEntry("l", "k", {"n": 1}, key="SA-1")]
    )
    for _ in range(3 * max_attempts):
        taken = await journal.take("l", 10)
        assert taken.ids == [head.id]  # per-key order holds: the one behind waits
        assert taken.entries[0].attempts == 1
        [result] = await journal.fail(
            taken.token, "l", [Failure(head.id, "CONNECT", "refused", counted=False)]
        )
        assert (result.state, result.attempts) == (EntryState.READY, 0)
    for attempt in range(1, max_attempts + 1):
        await asyncio.sleep(0.08)  # a counted failure backs off (at most 50 ms here)
        taken = await journal.take("l", 10)
        assert taken.entries[0].attempts == attempt
        [result] = await journal.fail(taken.token, "l", [Failure(head.id, "23505", "dup")])
    assert result.state is EntryState.PARKED
    shown = await journal_service.show(journal, head.id)
    assert [(e.code, e.counted) for e in shown.errors] == [("CONNECT", False)] * (
        3 * max_attempts
    ) + [("23505", True)] * max_attempts
    behind_state = await journal_service.show(journal, behind.id)
    assert behind_state.state is EntryState.WAITING
