-- Giving a run's tail back under the key's lock. Reaping decides, per expired entry,
-- whether it waits (an earlier entry of its key is unfinished) or is ready. An ack of
-- that earlier entry, committing meanwhile, decides on its own snapshot that there is
-- nothing to promote (the entry behind is still taken): each missed the other, and the
-- tail waited behind nothing, for ever. So, as ack's advance_keys does, reaping locks the
-- key rows first (in key order) and decides in a later statement, on a snapshot taken
-- after the lock: whichever commits second sees the first.
drop function journal.reap_expired(text, integer, integer, uuid[]);
create function journal.reap_expired(
    p_lane text, p_max_attempts integer, p_limit integer, p_held uuid[] default '{}'
)
returns table (id bigint, state journal.state)
language plpgsql as $$
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
