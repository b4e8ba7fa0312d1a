-- UNFINISHED_STATES was written out in a dozen places (queries, functions, index
-- predicates). Now journal.finished / journal.unfinished say it once, and the partial
-- indexes over unfinished entries are rebuilt on them (they hold only the backlog, so
-- the rebuild is quick; it blocks enqueue for that long).

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

drop index journal.entries_key_unfinished;
create index entries_key_unfinished on journal.entries (lane, key, id)
    where key is not null and journal.unfinished(state);

drop index journal.entries_dedup;
create unique index entries_dedup on journal.entries (lane, dedup_key)
    where dedup_key is not null and journal.unfinished(state);

-- After entries of these keys reached a final state (done, discarded), in the same
-- transaction: count them off their keys, drop keys with nothing left, and make the
-- next entry of every other key ready, unless that next entry is parked.
-- Set-based, a statement per step rather than per key: a backup daemon's batch of a
-- thousand contracts is one lock pass, one delete and (for keys with more) one update.
-- Keys are locked in (lane, key) order so that concurrent batches cannot deadlock; the
-- counts read under those locks stay true until the transaction ends.
-- A generic plan: with a hot key's statistics a custom plan may walk the primary key
-- through every finished entry before the key's head (tests/journal/test_query_plans.py).
create or replace function journal.advance_keys(p_lanes text[], p_keys text[]) returns void
language plpgsql
set plan_cache_mode = force_generic_plan
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
