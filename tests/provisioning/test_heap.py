"""bossa.heap.settled: the collector as a daemon runs it, and as it was afterwards."""

from __future__ import annotations

import gc

from bossa import heap


def test_settled_freezes_and_raises_the_threshold_then_puts_both_back() -> None:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    with heap.settled():
        assert gc.get_threshold() == heap.DAEMON_THRESHOLD
        assert gc.get_freeze_count() > 0
        with heap.settled():  # a second daemon of the same process
            assert gc.get_threshold() == heap.DAEMON_THRESHOLD
        # the first is still running: the heap stays settled
        assert gc.get_threshold() == heap.DAEMON_THRESHOLD
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen


def test_settled_puts_the_collector_back_when_the_daemon_fails() -> None:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    try:
        with heap.settled():
            raise RuntimeError("a daemon's failure")
    except RuntimeError:
        pass
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen
