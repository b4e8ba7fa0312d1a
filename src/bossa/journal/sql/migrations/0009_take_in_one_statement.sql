-- A worker's take in one statement (issue 13, p99 enqueue-to-start): journal.take_batch
-- waits (optionally) and takes in one round trip and one transaction; take_runs reads
-- the clock when it begins instead of the transaction's start.
create or replace function journal.take_runs(
    p_lane text, p_limit integer, p_run integer, p_token uuid, p_lease_ms double precision
) returns table (
    id bigint, lane text, key text, kind text, payload jsonb, attempts integer,
    created_at timestamptz, lease_expires_at timestamptz
)
language plpgsql as $$
declare
    -- The clock when the take begins, not now(): called by take_batch after a wait in
    -- the same transaction, now() is the wait's start, before the entries it waited for.
    v_now timestamptz := clock_timestamp();
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
        where e.lane = p_lane and e.state = 'ready' and e.not_before <= v_now
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
                    select e.id, (e.state = 'waiting' and e.not_before <= v_now) as ok
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
        lease_expires_at = v_now + make_interval(secs => p_lease_ms / 1000.0),
        taken_at = v_now
    where e.id = any (v_ids)
    returning e.id, e.lane, e.key, e.kind, e.payload, e.attempts, e.created_at,
              e.lease_expires_at;
end
$$;

-- A worker's take in one statement, so one round trip and one transaction: optionally
-- the wait for a ready entry (journal.wait_ready), then take_runs (p_run 1: heads only).
-- It first sets, for its own transaction only (the statement's, in autocommit):
-- - a generic plan for the statements of take_runs: with the batch size a parameter
--   every custom plan looks cheaper, so each take was planned again (0.7-0.9 ms);
-- - no wait for the commit's fsync: a lease is not worth one (see lease_settings in
--   queries.sql: a take lost in a crash only hands its entries out again).
-- It replaced a pipeline of wait_ready, lease_settings and the take (two transactions,
-- three or four statements): the same server work, but half the client's CPU a take and
-- fewer wake-ups of both processes, which on a busy machine each wait for a CPU.
-- take_runs reads the clock after the wait (now() is the wait's start).
create function journal.take_batch(
    p_lane text, p_limit integer, p_run integer, p_token uuid, p_lease_ms double precision,
    p_wait_ms integer, p_poll_ms integer
) returns table (
    id bigint, lane text, key text, kind text, payload jsonb, attempts integer,
    created_at timestamptz, lease_expires_at timestamptz
)
language plpgsql as $$
begin
    perform set_config('plan_cache_mode', 'force_generic_plan', true),
            set_config('synchronous_commit', 'off', true);
    if p_wait_ms > 0 and not journal.wait_ready(p_lane, p_wait_ms, p_poll_ms) then
        return;
    end if;
    return query select * from journal.take_runs(p_lane, p_limit, p_run, p_token, p_lease_ms);
end
$$;
