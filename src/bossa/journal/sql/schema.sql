-- The whole current schema of the journal; migrations/ are the steps that build it.
create schema journal;

-- waiting: behind an unfinished entry of its key; ready: may be taken once due;
-- taken: leased to a worker; parked: out of attempts or parked by an operator, and still
-- blocking its key; done and discarded are final.
create type journal.state as enum ('waiting', 'ready', 'taken', 'parked', 'done', 'discarded');

-- Which states are final, said once. Every query, function and index predicate that asks
-- "finished?" or "unfinished?" calls these. They are plain immutable SQL functions, so the
-- planner inlines them (into `state = any ('{done,discarded}')` and its negation) in the
-- queries and in the partial index predicates alike, and still proves the partial indexes
-- usable (tests/journal/test_query_plans.py). They must stay inlinable: no STRICT, no SET,
-- no plpgsql. The index entries_finished spells the list out: see its comment.
create function journal.finished(p_state journal.state) returns boolean
language sql immutable parallel safe
as $$ select p_state in ('done', 'discarded') $$;

create function journal.unfinished(p_state journal.state) returns boolean
language sql immutable parallel safe
as $$ select not journal.finished(p_state) $$;

-- The lane registry: a lane exists once declared, and belongs to the module that consumes
-- it (`owner`: 'provisioning', 'billing', ..., or 'journal' for an operator's own lanes).
-- Operator commands refuse an undeclared lane (a typo), and the generic operator routes
-- refuse to create or rewrite entries on another module's lane. `settings` override the
-- defaults in JournalSettings (validated in Python); `updated_*` say who changed them.
create table journal.lanes (
    lane        text        primary key check (lane <> ''),
    settings    jsonb       not null default '{}' check (jsonb_typeof(settings) = 'object'),
    updated_at  timestamptz not null default now(),
    updated_by  text        not null default current_user,
    owner       text        not null check (owner ~ '^[a-z][a-z0-9_]*$'),
    created_at  timestamptz not null default now(),
    created_by  text        not null default current_user
);

create table journal.entries (
    id               bigint generated always as identity primary key,
    lane             text          not null check (lane <> ''),
    key              text          check (key <> ''),   -- null: no ordering with other entries
    kind             text          not null check (kind <> ''),
    payload          jsonb         not null,
    state            journal.state not null,
    not_before       timestamptz   not null default now(),
    attempts         integer       not null default 0,
    lease_token      uuid,
    lease_expires_at timestamptz,
    dedup_key        text,
    -- One object per failed attempt: {attempt, code, message, at}.
    errors           jsonb         not null default '[]',
    created_at       timestamptz   not null default now(),
    created_by       text          not null,
    taken_at         timestamptz,
    finished_at      timestamptz
) with (
    -- Every entry is updated two or three times in its life: leave room for HOT-free
    -- updates on the same page and vacuum early, so a busy journal does not bloat.
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);

-- The claim: due ready entries of a lane, oldest first. Its order matches take's ORDER BY.
create index entries_ready on journal.entries (lane, not_before, id) where state = 'ready';
-- A key's unfinished entries in order: the head and the ones waiting behind it.
create index entries_key_unfinished on journal.entries (lane, key, id)
    where key is not null and journal.unfinished(state);
create unique index entries_dedup on journal.entries (lane, dedup_key)
    where dedup_key is not null and journal.unfinished(state);
create index entries_leases on journal.entries (lease_expires_at) where state = 'taken';
-- The one place the final states stay written out, beside journal.finished: this index
-- holds every finished entry within retention, and rebuilding it on journal.finished
-- would block enqueue for as long as reading all of them takes. The planner inlines
-- journal.finished(state) into exactly this predicate, so purge and finished_lanes
-- (which call the function) still use it; change both together.
create index entries_finished on journal.entries (lane, finished_at)
    where state in ('done', 'discarded');

-- One row per (lane, key) that has unfinished entries: the per-key lock every state
-- change of that key goes through, and the count that tells enqueue whether its entry
-- is the key's head. Updates are HOT: nothing here is indexed but the key.
create table journal.keys (
    lane        text    not null,
    key         text    not null,
    unfinished  integer not null check (unfinished >= 0),
    primary key (lane, key)
) with (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);

-- Lanes with a worker asleep, waiting for a NOTIFY. Enqueue notifies only when it
-- removes a row here: NOTIFY serialises committing transactions (a global lock held
-- through the commit), so busy lanes, whose workers never sleep, must not pay it.
-- Unlogged: a hint, rebuilt by the next worker that goes to sleep.
create unlogged table journal.sleepers (
    lane   text primary key,
    since  timestamptz not null default now()
);

-- Every operator action: who, when, why, and the entry before and after.
create table journal.audit (
    id        bigint generated always as identity primary key,
    at        timestamptz not null default now(),
    actor     text        not null,
    action    text        not null,
    entry_id  bigint,
    lane      text,
    reason    text,
    before    jsonb,
    after     jsonb
);
create index audit_entry on journal.audit (entry_id);

-- After entries of these keys reached a final state (done, discarded), in the same
-- transaction: count them off their keys, drop keys with nothing left, and make the
-- next entry of every other key ready, unless that next entry is parked.
-- Set-based, a statement per step rather than per key: a backup daemon's batch of a
-- thousand contracts is one lock pass, one delete and (for keys with more) one update.
-- Keys are locked in (lane, key) order so that concurrent batches cannot deadlock; the
-- counts read under those locks stay true until the transaction ends.
-- A generic plan: with a hot key's statistics a custom plan may walk the primary key
-- through every finished entry before the key's head (tests/journal/test_query_plans.py).
-- It and the other hot functions (ack, fail, take_runs, wait_ready, reap_expired) plan
-- with sequential and bitmap scans off: a queue's statistics are stale by nature, and a
-- plan made while the table was empty, kept for the connection's life, read every entry
-- on every call. Each of their statements has its index (migration 0010).
create function journal.advance_keys(p_lanes text[], p_keys text[]) returns void
language plpgsql
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
set enable_bitmapscan = off
as $$
declare
    v_lanes text[];
    v_keys text[];
    v_left integer[];
    v_woken bigint;
begin
    select array_agg(l.lane), array_agg(l.key), array_agg(l.remaining)
    into v_lanes, v_keys, v_left
    from (
        select k.lane, k.key, k.unfinished - f.n as remaining
        from journal.keys k
        join (
            select u.lane, u.key, count(*)::integer as n
            from unnest(p_lanes, p_keys) as u(lane, key)
            where u.key is not null
            group by u.lane, u.key
        ) f on k.lane = f.lane and k.key = f.key
        order by k.lane, k.key
        for update of k
    ) l;
    if v_lanes is null then
        return;
    end if;

    delete from journal.keys k
    using unnest(v_lanes, v_keys, v_left) as r(lane, key, remaining)
    where r.remaining <= 0 and k.lane = r.lane and k.key = r.key;

    if not exists (select from unnest(v_left) as r(remaining) where r.remaining > 0) then
        return;  -- the common case: every key is finished with
    end if;
    update journal.keys k set unfinished = r.remaining
    from unnest(v_lanes, v_keys, v_left) as r(lane, key, remaining)
    where r.remaining > 0 and k.lane = r.lane and k.key = r.key;

    -- Each remaining key's head becomes ready if it was waiting, and a worker asleep on
    -- its lane is woken.
    with promoted as (
        update journal.entries e set state = 'ready'
        where e.id in (
            select (
                select h.id from journal.entries h
                where h.lane = r.lane and h.key = r.key
                  and journal.unfinished(h.state)
                order by h.id
                limit 1
            )
            from unnest(v_lanes, v_keys, v_left) as r(lane, key, remaining)
            where r.remaining > 0
        ) and e.state = 'waiting'
        returning e.lane
    ), woken as (
        delete from journal.sleepers s
        where s.lane in (select p.lane from promoted p)
        returning s.lane
    )
    select count(pg_notify('bossa_journal', w.lane)) into v_woken from woken w;
end
$$;

-- Ack: taken entries whose lease token matches become done; returns the ids accepted.
-- A stale token (the lease expired and the entry was handed out again) is refused.
create function journal.ack(p_ids bigint[], p_token uuid) returns setof bigint
language plpgsql
set enable_seqscan = off
set enable_bitmapscan = off
as $$
declare
    v_ids bigint[];
    v_lanes text[];
    v_keys text[];
begin
    with acked as (
        update journal.entries e
        set state = 'done', finished_at = now(), lease_token = null, lease_expires_at = null
        where e.id = any (p_ids) and e.state = 'taken' and e.lease_token = p_token
        returning e.id, e.lane, e.key
    )
    select array_agg(id), array_agg(lane), array_agg(key) into v_ids, v_lanes, v_keys from acked;
    if v_ids is not null then
        perform journal.advance_keys(v_lanes, v_keys);
        return query select unnest(v_ids);
    end if;
end
$$;

-- Fail: record the error, then retry after an exponential backoff with jitter, or park
-- the entry once it has used its attempts. The key stays blocked either way.
create function journal.fail(
    p_ids bigint[], p_token uuid, p_codes text[], p_messages text[],
    p_max_attempts integer, p_backoff_base_ms integer, p_backoff_max_ms integer
) returns table (id bigint, state journal.state, attempts integer, not_before timestamptz)
language sql
set enable_seqscan = off
set enable_bitmapscan = off
as $$
    update journal.entries e
    set state = case when e.attempts >= p_max_attempts then 'parked' else 'ready' end::journal.state,
        not_before = case
            when e.attempts >= p_max_attempts then e.not_before
            else now() + make_interval(secs => least(
                p_backoff_max_ms::double precision,
                p_backoff_base_ms * power(2::double precision, greatest(e.attempts - 1, 0))
            ) * (0.75 + random() * 0.5) / 1000.0)
        end,
        lease_token = null,
        lease_expires_at = null,
        errors = e.errors || jsonb_build_array(jsonb_build_object(
            'attempt', e.attempts, 'code', f.code, 'message', f.message, 'at', now()))
    from unnest(p_ids, p_codes, p_messages) as f(id, code, message)
    where e.id = f.id and e.state = 'taken' and e.lease_token = p_token
    returning e.id, e.state, e.attempts, e.not_before
$$;

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
language plpgsql
set enable_seqscan = off
set enable_bitmapscan = off
as $$
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
language plpgsql
set enable_seqscan = off
set enable_bitmapscan = off
as $$
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

-- Expired leases: the worker died or stalled. The key's head is handed out again, the
-- attempt counted, and parked instead if that was its last attempt; an entry behind an
-- unfinished one of its key (the rest of a run, see take_runs) waits again behind it,
-- its attempt counted too (the worker may have started it). `p_held` are the tokens the
-- reaping worker itself holds: alive, it extends them, however late its heartbeat runs.
-- The key rows are locked first, and the decision made on a later snapshot, as ack's
-- advance_keys does: a tail given back while its head is acked is never stranded.
create function journal.reap_expired(
    p_lane text, p_max_attempts integer, p_limit integer, p_held uuid[] default '{}'
)
returns table (id bigint, state journal.state)
language plpgsql
set enable_seqscan = off
set enable_bitmapscan = off
as $$
declare
    v_ids bigint[];
begin
    select array_agg(x.id) into v_ids
    from (
        select e.id from journal.entries e
        where e.state = 'taken' and e.lease_expires_at < now() and e.lane = p_lane
          and e.lease_token <> all (p_held)
        order by e.lease_expires_at, e.id
        limit p_limit
    ) x;
    if v_ids is null then
        return;
    end if;

    perform 1 from journal.keys k
    where (k.lane, k.key) in (
        select e.lane, e.key from journal.entries e
        where e.id = any (v_ids) and e.key is not null
    )
    order by k.lane, k.key
    for update of k;

    -- Still taken and expired (an ack or a heartbeat may have come meanwhile).
    return query
    with expired as (
        select e.id from journal.entries e
        where e.id = any (v_ids) and e.state = 'taken' and e.lease_expires_at < now()
          and e.lease_token <> all (p_held)
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
    returning e.id, e.state;
end
$$;

-- published: journal.declare_lane
-- Declare a lane for the module that consumes it; idempotent. A lane already declared
-- for another module is refused: two modules consuming one lane would each take the
-- other's entries.
create function journal.declare_lane(p_lane text, p_owner text, p_actor text default null)
returns void
language plpgsql as $$
declare
    v_owner text;
begin
    insert into journal.lanes (lane, owner, created_by, updated_by)
    values (p_lane, p_owner, coalesce(p_actor, current_user), coalesce(p_actor, current_user))
    on conflict (lane) do nothing;
    select l.owner into v_owner from journal.lanes l where l.lane = p_lane;
    if v_owner is distinct from p_owner then
        raise exception 'lane % is owned by %, not %', p_lane, v_owner, p_owner
            using errcode = 'BJ001', hint = v_owner;
    end if;
end
$$;

-- published: journal.lane_entries
-- The journal's entries as other modules may read them (never journal.entries itself):
-- the columns are a stable interface, the table's layout is the journal's own.
create view journal.lane_entries as
select e.id, e.lane, e.key, e.kind, e.payload, e.state::text as state, e.attempts,
       e.not_before, e.created_at, e.created_by, e.taken_at, e.finished_at, e.errors,
       e.errors -> -1 ->> 'code' as last_error_code,
       e.errors -> -1 ->> 'message' as last_error_message,
       (e.errors -> -1 ->> 'at')::timestamptz as last_error_at,
       -- The state as the enum, to filter on: the partial indexes are on the enum, and a
       -- filter on the text column cannot use them (migration 0007).
       e.state as state_enum
from journal.entries e;
