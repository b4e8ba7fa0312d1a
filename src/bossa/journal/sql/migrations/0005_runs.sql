-- Runs and short leases (issue 13): take_runs leases a run of one key's entries at once,
-- so a hot key drains a run per take/ack cycle; reap_expired hands only a key's head out
-- again and makes the rest of an expired run wait behind it.

-- Take with runs: up to `p_limit` due ready heads, oldest first (as the single-statement
-- take), and then, for each head's key, the entries right behind it, in order, up to
-- `p_run` entries of the key in all and `p_limit` entries in all (heads first, the oldest
-- heads' runs before the younger ones'). All go out under one lease. A hot key is then
-- drained a run per take/ack cycle instead of an entry per cycle. The worker runs a
-- key's entries one after another and gives back the rest of the run from the first
-- failure on (release makes them wait again behind the failed one).
-- Three statements, each with a fresh snapshot (READ COMMITTED): the heads are locked
-- (skip locked, as take); then the key rows of the heads that have more, in share mode
-- and skip locked: enqueue, ack, discard and every operator action change a waiting
-- entry only under its key row's exclusive lock, so while we hold it in share mode the
-- entries behind the head stay what the third statement reads. A key row someone holds
-- is skipped, and its head goes out alone. Locking entries then key rows is the reverse
-- of the operators' order, hence skip locked: never a wait, so never a deadlock.
-- A run stops at the first entry behind the head that is not waiting, or not yet due.
create function journal.take_runs(
    p_lane text, p_limit integer, p_run integer, p_token uuid, p_lease_ms double precision
) returns table (
    id bigint, lane text, key text, kind text, payload jsonb, attempts integer,
    created_at timestamptz, lease_expires_at timestamptz
)
language plpgsql as $$
declare
    v_heads bigint[];
    v_keys text[];
    v_locked text[];
    v_ids bigint[];
begin
    select array_agg(h.id order by h.not_before, h.id), array_agg(h.key order by h.not_before, h.id)
    into v_heads, v_keys
    from (
        select e.id, e.key, e.not_before
        from journal.entries e
        where e.lane = p_lane and e.state = 'ready' and e.not_before <= now()
        order by e.not_before, e.id
        limit p_limit
        for update skip locked
    ) h;
    if v_heads is null then
        return;
    end if;
    v_ids := v_heads;
    if p_run > 1 and cardinality(v_heads) < p_limit then
        select array_agg(k.key) into v_locked
        from (
            select k.key from journal.keys k
            where k.lane = p_lane and k.key = any (v_keys) and k.unfinished > 1
            order by k.key
            for share skip locked
        ) k;
    end if;
    if v_locked is not null then
        select v_ids || coalesce(array_agg(r.id order by r.head, r.id), '{}')
        into v_ids
        from (
            select f.id, f.head, row_number() over (order by f.head, f.id) as n
            from (
                select x.id, h.ord as head,
                       bool_and(x.ok) over (partition by h.ord order by x.id) as in_run
                from unnest(v_heads, v_keys) with ordinality as h (id, key, ord)
                cross join lateral (
                    select e.id, (e.state = 'waiting' and e.not_before <= now()) as ok
                    from journal.entries e
                    where e.lane = p_lane and e.key = h.key and e.id > h.id
                      and journal.unfinished(e.state)
                    order by e.id
                    limit p_run - 1
                ) x
                where h.key = any (v_locked)
            ) f
            where f.in_run
        ) r
        where r.n <= p_limit - cardinality(v_heads);
    end if;
    return query
    update journal.entries e
    set state = 'taken',
        attempts = e.attempts + 1,
        lease_token = p_token,
        lease_expires_at = now() + make_interval(secs => p_lease_ms / 1000.0),
        taken_at = now()
    where e.id = any (v_ids)
    returning e.id, e.lane, e.key, e.kind, e.payload, e.attempts, e.created_at,
              e.lease_expires_at;
end
$$;

-- Expired leases: the worker died or stalled. The key's head is handed out again, the
-- attempt counted, and parked instead if that was its last attempt; an entry behind an
-- unfinished one of its key (the rest of a run, see take_runs) waits again behind it,
-- its attempt counted too (the worker may have started it). `p_held` are the tokens the
-- reaping worker itself holds: alive, it extends them, however late its heartbeat runs.
drop function journal.reap_expired(text, integer, integer);
create function journal.reap_expired(
    p_lane text, p_max_attempts integer, p_limit integer, p_held uuid[] default '{}'
)
returns table (id bigint, state journal.state)
language sql as $$
    with expired as (
        select e.id from journal.entries e
        where e.state = 'taken' and e.lease_expires_at < now() and e.lane = p_lane
          and e.lease_token <> all (p_held)
        order by e.lease_expires_at, e.id
        limit p_limit
        for update skip locked
    )
    update journal.entries e
    set state = case
            when e.key is not null and exists (
                select 1 from journal.entries b
                where b.lane = e.lane and b.key = e.key and b.id < e.id
                  and journal.unfinished(b.state)
            ) then 'waiting'
            when e.attempts >= p_max_attempts then 'parked'
            else 'ready'
        end::journal.state,
        lease_token = null,
        lease_expires_at = null,
        errors = e.errors || jsonb_build_array(jsonb_build_object(
            'attempt', e.attempts, 'code', 'lease_expired',
            'message', 'the worker holding the lease did not ack, fail or extend it in time',
            'at', now()))
    from expired
    where e.id = expired.id
    returning e.id, e.state
$$;
