-- A taker that found nothing while work came recently waits in the database for the lane
-- to have a ready entry, then takes at once: the wait and the take go in one pipeline
-- (two transactions: the take's now() must be after the wait), so an entry committed
-- during the wait is taken within one poll and no round trip. It replaced a taker that
-- polled from Python every few milliseconds (a round trip, a take and an event-loop
-- wake-up each time) and a NOTIFY round for the first entry after a quiet spell.
-- Each probe is one look at entries_ready; the wait is bounded by the caller (at most a
-- second), so the snapshot it holds keeps vacuum back no longer than that.
create function journal.wait_ready(p_lane text, p_wait_ms integer, p_poll_ms integer)
returns boolean
language plpgsql as $$
declare
    v_until timestamptz := clock_timestamp() + make_interval(secs => p_wait_ms / 1000.0);
    v_now timestamptz;
begin
    loop
        -- clock_timestamp(), not now(): now() stays at the wait's start, and an entry
        -- enqueued during the wait is due at its own (later) transaction start.
        v_now := clock_timestamp();
        if exists (
            select 1 from journal.entries e
            where e.lane = p_lane and e.state = 'ready' and e.not_before <= v_now
        ) then
            return true;
        end if;
        exit when v_now >= v_until;
        perform pg_sleep(least(p_poll_ms / 1000.0, extract(epoch from v_until - v_now)));
    end loop;
    return false;
end
$$;
