-- Named queries of the journal. The hot ones (enqueue, take, ack, fail) are single
-- statements; their plans are pinned by tests/journal/test_query_plans.py.
-- Text arrays of the enqueue statements go in binary (`%(name)b`): in the text format
-- psycopg escapes every element of an array literal with a regular expression, and JSON
-- is all quotes, which cost about 10 us a payload, most of a 1,000-entry enqueue's CPU
-- in the client; binary sends each element as it is, with its length.

-- name: enqueue
-- Insert a batch in input order. A keyed entry is ready only if its key had nothing
-- unfinished before this batch; the rest wait behind it. Entries whose dedup key is
-- already pending are skipped and answered with the pending entry's id.
with input as (
    select *
    from unnest(
        %(lanes)b::text[], %(keys)b::text[], %(kinds)b::text[], %(payloads)b::text[],
        %(not_befores)s::timestamptz[], %(dedup_keys)b::text[]
    ) with ordinality as i (lane, key, kind, payload, not_before, dedup_key, ord)
),
duplicate as (
    select i.ord, e.id
    from input i
    join journal.entries e
      on e.lane = i.lane and e.dedup_key = i.dedup_key
     and journal.unfinished(e.state)
    where i.dedup_key is not null
),
fresh as (
    select i.* from input i where not exists (select 1 from duplicate d where d.ord = i.ord)
),
counted as (
    select lane, key, count(*)::integer as n from fresh where key is not null group by lane, key
),
heads as (
    -- Taking the key row's lock orders this batch with every other change to the key.
    insert into journal.keys as k (lane, key, unfinished)
    select lane, key, n from counted order by lane, key
    on conflict (lane, key) do update set unfinished = k.unfinished + excluded.unfinished
    returning k.lane, k.key, k.unfinished
),
inserted as (
    insert into journal.entries (lane, key, kind, payload, state, not_before, dedup_key, created_by)
    select f.lane, f.key, f.kind, f.payload::jsonb,
           case
               when f.key is null then 'ready'
               when row_number() over (partition by f.lane, f.key order by f.ord) = 1
                    and h.unfinished = c.n then 'ready'
               else 'waiting'
           end::journal.state,
           coalesce(f.not_before, now()), f.dedup_key, %(created_by)s
    from fresh f
    left join heads h on h.lane = f.lane and h.key = f.key
    left join counted c on c.lane = f.lane and c.key = f.key
    order by f.ord
    returning id
),
numbered_new as (
    select id, row_number() over (order by id) as rn from inserted
),
numbered_fresh as (
    select ord, row_number() over (order by ord) as rn from fresh
),
woken as (
    -- NOTIFY only wakes workers (it carries no work, so a lost one strands nothing), and
    -- only lanes with a worker asleep: see journal.sleepers.
    delete from journal.sleepers s
    where s.lane in (select lane from fresh)
    returning pg_notify('bossa_journal', s.lane)
)
select nf.ord, nn.id, true as created
from numbered_fresh nf join numbered_new nn using (rn)
union all
select d.ord, d.id, false from duplicate d
union all
select null, null, null from woken where false
order by 1

-- name: enqueue_plain
-- The common bulk case, with no key and no dedup key: nothing to count or to look up.
with inserted as (
    insert into journal.entries (lane, kind, payload, state, not_before, created_by)
    select i.lane, i.kind, i.payload::jsonb, 'ready', coalesce(i.not_before, now()),
           %(created_by)s
    from unnest(
        %(lanes)b::text[], %(kinds)b::text[], %(payloads)b::text[],
        %(not_befores)s::timestamptz[]
    ) with ordinality as i (lane, kind, payload, not_before, ord)
    order by i.ord
    returning id, lane
),
woken as (
    delete from journal.sleepers s
    where s.lane in (select lane from inserted)
    returning pg_notify('bossa_journal', s.lane)
)
select row_number() over (order by id) as ord, id, true as created
from inserted
order by id

-- name: enqueue_uniform
-- The commonest bulk case: one lane, one kind, no key, no dedup key, due now. The lane
-- and kind go once, not once per entry, and the ids come back as one array (in input
-- order: identities are drawn in the order the rows are inserted).
with inserted as (
    insert into journal.entries (lane, kind, payload, state, created_by)
    select %(lane)s, %(kind)s, i.payload::jsonb, 'ready', %(created_by)s
    from unnest(%(payloads)b::text[]) with ordinality as i (payload, ord)
    order by i.ord
    returning id
),
woken as (
    delete from journal.sleepers s
    where s.lane = %(lane)s
    returning pg_notify('bossa_journal', s.lane)
)
select array_agg(id order by id) as ids from inserted

-- name: enqueue_single
-- One entry of the uniform case (no key, no dedup key, due now): scalar parameters, no
-- array to build, send and unnest; the commonest call of all (a producer per event).
with inserted as (
    insert into journal.entries (lane, kind, payload, state, created_by)
    values (%(lane)s, %(kind)s, %(payload)s::jsonb, 'ready', %(created_by)s)
    returning id
),
woken as (
    delete from journal.sleepers s
    where s.lane = %(lane)s
    returning pg_notify('bossa_journal', s.lane)
)
select id from inserted

-- name: enqueue_or_claim
-- P5 in one statement: if (lane, key) has nothing unfinished, the new entry is taken at
-- once under a lease (the go-ahead to deliver directly); otherwise it waits behind the
-- key's backlog. The key row's lock makes the question and the answer atomic.
with head as (
    insert into journal.keys as k (lane, key, unfinished)
    values (%(lane)s, %(key)s, 1)
    on conflict (lane, key) do update set unfinished = k.unfinished + 1
    returning k.unfinished
),
inserted as (
    insert into journal.entries (
        lane, key, kind, payload, state, attempts, lease_token, lease_expires_at, taken_at,
        created_by
    )
    select %(lane)s, %(key)s, %(kind)s, %(payload)s::jsonb,
           case when head.unfinished = 1 then 'taken' else 'waiting' end::journal.state,
           case when head.unfinished = 1 then 1 else 0 end,
           case when head.unfinished = 1 then %(token)s::uuid end,
           case when head.unfinished = 1
                then now() + make_interval(secs => %(lease_ms)s / 1000.0) end,
           case when head.unfinished = 1 then now() end,
           %(created_by)s
    from head
    returning id, state, lease_expires_at, created_at
)
-- No NOTIFY: the entry is either taken by the caller or waits behind the key's head,
-- whose completion promotes it (and wakes a sleeping worker then).
select * from inserted

-- name: lease_settings
-- Sent with take in one pipeline, so in the same (implicit) transaction, and undone
-- when it ends (journal.take_batch and take_runs set the same themselves). They only
-- change how the take runs, never what it leases:
-- - A generic plan. With the batch size as a parameter every custom plan looks cheaper
--   than the generic one, so PostgreSQL planned each take again (0.7-0.9 ms, more than
--   a small take itself costs); the generic plan walks entries_ready all the same.
-- - No wait for the fsync of the commit: a lease is not worth one. If the server
--   crashes before the WAL writer flushes it (a fraction of a second), the take is lost
--   and its entries are ready again, to be delivered again, as at-least-once delivery
--   already allows (an expired lease does the same); an ack under the lost lease is
--   refused as stale, so fencing holds. Ack, fail, release and enqueue still wait for
--   their fsync, and an ack's flush makes the take before it durable too (the WAL is
--   flushed in order). Journal.take runs on a pooled connection of its own, never in a
--   caller's transaction, so nothing else is committed this way.
-- - No sequential or bitmap scan, as in the journal's functions (migration 0010): the
--   generic plan is kept for the connection's life, and made on a lane that was empty
--   at its last ANALYZE it read the whole table, done entries included, on every take.
select set_config('plan_cache_mode', 'force_generic_plan', true),
       set_config('synchronous_commit', 'off', true),
       set_config('enable_seqscan', 'off', true),
       set_config('enable_bitmapscan', 'off', true)

-- name: take
-- Lease up to `limit` due ready entries of a lane, oldest first. At most one entry per
-- key is ever ready, so a batch never holds two entries of one key. The ids go in as an
-- array, so the update walks the primary key for them whatever the batch size (a join
-- with a big batch was planned as a sequential scan of the whole table).
-- Runs after lease_settings, in its transaction (see there).
update journal.entries e
set state = 'taken',
    attempts = e.attempts + 1,
    lease_token = %(token)s,
    lease_expires_at = now() + make_interval(secs => %(lease_ms)s / 1000.0),
    taken_at = now()
where e.id = any (array(
    select id
    from journal.entries
    where lane = %(lane)s and state = 'ready' and not_before <= now()
    order by not_before, id
    limit %(limit)s
    for update skip locked
))
returning e.id, e.lane, e.key, e.kind, e.payload, e.attempts, e.created_at, e.lease_expires_at

-- name: take_batch
-- A worker's take: the optional wait, the settings of lease_settings and take_runs (heads
-- with their runs; run 1: heads only), in one statement (see journal.take_batch).
select * from journal.take_batch(
    %(lane)s, %(limit)s, %(run)s, %(token)s::uuid, %(lease_ms)s::double precision,
    %(wait_ms)s, %(poll_ms)s
)

-- name: ack
-- Finish taken entries held under this lease token; returns the ids accepted. The ids
-- go in binary (a batch of hundreds: no text to write and parse).
select ack as id from journal.ack(%(ids)b::bigint[], %(token)s::uuid)

-- name: fail
-- Record one error per entry and schedule a retry, or park past the attempt limit.
select * from journal.fail(
    %(ids)s::bigint[], %(token)s::uuid, %(codes)s::text[], %(messages)s::text[],
    %(max_attempts)s, %(backoff_base_ms)s, %(backoff_max_ms)s
)

-- name: fail_uncounted
-- Record a failure that is not the entry's fault (its target could not be reached): the
-- attempt is given back, so it never parks for it, and the entry is ready again; the
-- consumer holds its lane until the target answers. Marked "counted": false in history.
update journal.entries e
set state = 'ready',
    attempts = greatest(e.attempts - 1, 0),
    not_before = now(),
    lease_token = null,
    lease_expires_at = null,
    taken_at = null,
    errors = e.errors || jsonb_build_array(jsonb_build_object(
        'attempt', e.attempts, 'code', f.code, 'message', f.message, 'at', now(),
        'counted', false))
from unnest(%(ids)s::bigint[], %(codes)s::text[], %(messages)s::text[]) as f(id, code, message)
where e.id = f.id and e.state = 'taken' and e.lease_token = %(token)s
returning e.id, e.state, e.attempts, e.not_before

-- name: heartbeat
-- Extend the lease of entries still held under this token; returns those extended.
update journal.entries
set lease_expires_at = now() + make_interval(secs => %(lease_ms)s / 1000.0)
where id = any (%(ids)s::bigint[]) and state = 'taken' and lease_token = %(token)s
returning id

-- name: lock_keys_of
-- The key rows of these entries, locked in key order (as enqueue and advance_keys take
-- them) before release decides which of them wait: an ack of the key's head commits
-- either before (release then sees it done) or after (its advance then sees them waiting).
select k.key from journal.keys k
where (k.lane, k.key) in (
    select e.lane, e.key from journal.entries e
    where e.id = any (%(ids)s::bigint[]) and e.key is not null
)
order by k.lane, k.key
for update of k

-- name: release
-- Hand back entries a stopping worker took but did not start; the attempt is not counted.
-- The key's head becomes ready again; the rest of a run (take_runs) waits behind it.
-- Runs after lock_keys_of, in its transaction and with a snapshot taken after its lock.
update journal.entries e
set state = case
        when e.key is not null and exists (
            select 1 from journal.entries b
            where b.lane = e.lane and b.key = e.key and b.id < e.id
              and journal.unfinished(b.state)
        ) then 'waiting'
        else 'ready'
    end::journal.state,
    attempts = greatest(e.attempts - 1, 0), lease_token = null,
    lease_expires_at = null, taken_at = null
where e.id = any (%(ids)s::bigint[]) and e.state = 'taken' and e.lease_token = %(token)s
returning e.id

-- name: reap_expired
-- Leases that ran out: hand the entries out again (or park them after the last attempt).
select * from journal.reap_expired(%(lane)s, %(max_attempts)s, %(limit)s, %(held)s::uuid[])

-- name: sleep
-- A worker found nothing to do and is going to sleep: ask enqueue to NOTIFY this lane.
insert into journal.sleepers (lane) values (%(lane)s)
on conflict (lane) do update set since = now()

-- name: lane_busy
-- Anything ready (due now or after a backoff) or leased in the lane? (--once passes end
-- when not.)
select exists (
    select 1 from journal.entries where lane = %(lane)s and state in ('ready', 'taken')
) as busy

-- name: wake
-- Wake the lane's workers after an operator made an entry due (only if one sleeps).
with woken as (
    delete from journal.sleepers where lane = %(lane)s
    returning pg_notify('bossa_journal', lane)
)
select count(*) as woken from woken

-- name: next_due
-- When the next ready entry of a lane falls due: the worker sleeps no longer than that.
select min(not_before) as due from journal.entries where lane = %(lane)s and state = 'ready'

-- name: next_lease_expiry
-- When the next lease of a lane runs out, so that a worker can reap it on time.
select min(lease_expires_at) as expires from journal.entries
where state = 'taken' and lane = %(lane)s

-- name: lane_settings
-- One lane's stored overrides.
select settings from journal.lanes where lane = %(lane)s

-- name: declare_lane
-- Declare a lane for its owner (idempotent; refused with SQLSTATE BJ001 for another owner).
select journal.declare_lane(%(lane)s, %(owner)s, %(actor)s)

-- name: lane
-- One declared lane: its owner, its stored overrides, who declared it and who changed them.
select lane, owner, settings, created_at, created_by, updated_at, updated_by
from journal.lanes where lane = %(lane)s

-- name: lanes
-- Declared lanes by name, a page at a time (after a name; a null limit is no limit).
select lane, owner, settings, created_at, created_by, updated_at, updated_by
from journal.lanes
where lane > %(after)s
order by lane
limit %(limit)s

-- name: update_lane_settings
-- Store a declared lane's overrides (the whole validated object); no row, no lane.
update journal.lanes
set settings = %(settings)s::jsonb, updated_at = now(), updated_by = %(actor)s
where lane = %(lane)s
returning lane

-- name: lock_key
-- The per-key lock every operator action on a keyed entry takes first.
select unfinished from journal.keys where lane = %(lane)s and key = %(key)s for update

-- name: entry_for_update
-- One entry, locked, for an operator action.
select * from journal.entries where id = %(id)s for update

-- name: entry
-- One entry with its error history.
select * from journal.entries where id = %(id)s

-- name: is_head
-- True when no unfinished entry of the same key comes before this one.
select not exists (
    select 1 from journal.entries
    where lane = %(lane)s and key = %(key)s and id < %(id)s
      and journal.unfinished(state)
) as head

-- name: audit
-- Record an operator action.
insert into journal.audit (actor, action, entry_id, lane, reason, before, after)
values (%(actor)s, %(action)s, %(entry_id)s, %(lane)s, %(reason)s, %(before)s, %(after)s)

-- name: audit_of_entry
-- The operator actions on one entry, oldest first.
select at, actor, action, reason, before, after from journal.audit
where entry_id = %(id)s order by id

-- name: advance_keys
-- Count finished entries off their keys and promote the next ones.
select journal.advance_keys(%(lanes)s::text[], %(keys)s::text[])

-- name: counts
-- Entries by lane and state with the oldest unfinished age (final states counted too).
select lane, state::text as state, count(*) as entries,
       extract(epoch from now() - min(created_at)) as oldest_age_s
from journal.entries
group by lane, state
order by lane, state

-- name: throughput
-- Entries finished per lane in the last `seconds`.
select lane, count(*) as finished
from journal.entries
where journal.finished(state) and finished_at > now() - make_interval(secs => %(seconds)s)
group by lane
order by lane

-- name: blocked_keys
-- Keys whose head is parked or failing: the contracts an operator should look at.
select k.lane, k.key, k.unfinished, h.id as head_id, h.state::text as state, h.attempts,
       h.errors -> -1 as last_error, h.created_at
from journal.keys k
cross join lateral (
    select e.id, e.state, e.attempts, e.errors, e.created_at
    from journal.entries e
    where e.lane = k.lane and e.key = k.key and journal.unfinished(e.state)
    order by e.id
    limit 1
) h
where (%(lane)s::text is null or k.lane = %(lane)s)
  and (h.state = 'parked' or (h.state = 'ready' and h.attempts > 0))
order by h.created_at
limit %(limit)s

-- name: purge
-- Delete up to `limit` finished entries of a lane older than its retention.
delete from journal.entries
where id in (
    select id from journal.entries
    where lane = %(lane)s and journal.finished(state)
      and finished_at < now() - make_interval(secs => %(retention_s)s)
    limit %(limit)s
)

-- name: finished_lanes
-- Lanes with finished entries, by a loose scan of entries_finished (not the whole table).
with recursive lanes as (
    select min(lane) as lane from journal.entries where journal.finished(state)
    union all
    select (
        select min(e.lane) from journal.entries e
        where journal.finished(e.state) and e.lane > lanes.lane
    )
    from lanes
    where lanes.lane is not null
)
select lane from lanes where lane is not null

-- name: list_entries
-- Entries for operators, oldest first, filtered by any of lane, state, key, age, error code.
select id, lane, key, kind, state::text as state, attempts, not_before, created_at,
       finished_at, dedup_key, errors -> -1 as last_error, payload
from journal.entries
where (%(lane)s::text is null or lane = %(lane)s)
  and (%(state)s::journal.state is null or state = %(state)s::journal.state)
  and (%(key)s::text is null or key = %(key)s)
  and (%(older_than_s)s::float8 is null
       or created_at < now() - make_interval(secs => %(older_than_s)s::float8))
  and (%(error_code)s::text is null or errors -> -1 ->> 'code' = %(error_code)s)
  and id > %(after_id)s
order by id
limit %(limit)s

-- name: set_state
-- An operator's state change on one locked entry.
update journal.entries
set state = %(state)s::journal.state,
    not_before = coalesce(%(not_before)s, not_before),
    attempts = coalesce(%(attempts)s, attempts),
    finished_at = case when journal.finished(%(state)s::journal.state) then now() end
where id = %(id)s
returning *

-- name: set_payload
-- An operator's edit of one locked entry's payload.
update journal.entries set payload = %(payload)s::jsonb where id = %(id)s returning *

-- name: bulk_lock_keys
-- An operator's bulk action first locks the keys of the entries it selects, in key
-- order (the order enqueue and advance_keys take them in): per-key order holds, and
-- two bulk actions cannot deadlock.
select k.key from journal.keys k
where k.lane = %(lane)s
  and k.key in (
      select e.key from journal.entries e
      where e.lane = %(lane)s and e.key is not null
        and e.state = any (%(states)s::journal.state[])
        and (%(key)s::text is null or e.key = %(key)s)
        and (%(older_than_s)s::float8 is null
             or e.created_at < now() - make_interval(secs => %(older_than_s)s::float8))
        and (%(error_code)s::text is null or e.errors -> -1 ->> 'code' = %(error_code)s)
  )
order by k.key
for update of k

-- name: bulk_count
-- How many entries an operator's bulk action selects (its dry run).
select count(*) as n from journal.entries e
where e.lane = %(lane)s
  and e.state = any (%(states)s::journal.state[])
  and (%(key)s::text is null or e.key = %(key)s)
  and (%(older_than_s)s::float8 is null
       or e.created_at < now() - make_interval(secs => %(older_than_s)s::float8))
  and (%(error_code)s::text is null or e.errors -> -1 ->> 'code' = %(error_code)s)

-- name: bulk_set_state
-- An operator's bulk retry, park or discard, set-based: up to `limit` selected entries,
-- oldest first, change state in one statement, each audited with the reason. A retry
-- gives a fresh set of attempts, due now, ready if the entry heads its key (else it
-- waits behind the key's head); an entry taken meanwhile by a worker is left alone
-- (the state is checked again under the row lock). Returns the entries changed, so a
-- discard can advance their keys.
with target as (
    select e.id, e.state as before from journal.entries e
    where e.lane = %(lane)s
      and e.state = any (%(states)s::journal.state[])
      and (%(key)s::text is null or e.key = %(key)s)
      and (%(older_than_s)s::float8 is null
           or e.created_at < now() - make_interval(secs => %(older_than_s)s::float8))
      and (%(error_code)s::text is null or e.errors -> -1 ->> 'code' = %(error_code)s)
    order by e.id
    limit %(limit)s
    for update
),
changed as (
    update journal.entries e
    set state = case
            when %(action)s <> 'retry' then %(state)s::journal.state
            when e.key is null or not exists (
                select 1 from journal.entries h
                where h.lane = e.lane and h.key = e.key and h.id < e.id
                  and journal.unfinished(h.state)
            ) then 'ready'
            else 'waiting'
        end::journal.state,
        not_before = case when %(action)s = 'retry' then now() else e.not_before end,
        attempts = case when %(action)s = 'retry' then 0 else e.attempts end,
        finished_at = case when %(action)s = 'discard' then now() end
    from target t
    where e.id = t.id and e.state = any (%(states)s::journal.state[])
    returning e.id, e.lane, e.key, t.before::text as before, e.state::text as after
),
audited as (
    insert into journal.audit (actor, action, entry_id, lane, reason, before, after)
    select %(actor)s, %(action)s, c.id, c.lane, %(reason)s,
           jsonb_build_object('state', c.before, 'bulk', %(selection)s::jsonb),
           jsonb_build_object('state', c.after)
    from changed c
)
select id, lane, key, before, after from changed order by id
