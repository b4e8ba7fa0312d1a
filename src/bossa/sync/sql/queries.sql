-- name: contract_event
-- A contract as a business event carries it, with its customer's number.
select c.sa_id, c.customer_id, c.account_id, c.product_code, c.status, c.start_date,
       c.end_date, u.msisdn
from customers.contract_terms c
join customers.customer_rows u on u.id = c.customer_id
where c.sa_id = %(sa_id)s

-- name: held
-- Is any event of the lane held (parked) for an operator? Then the listener waits (S8).
select exists (
    select 1 from journal.lane_entries
    where lane = %(lane)s and key is not null and state_enum = 'parked'
) as held

-- name: by_state
-- The lane's events by journal state.
select state, count(*) as n from journal.lane_entries where lane = %(lane)s group by state

-- name: backlog
-- The oldest READY event's age and the events processed in the window.
select
    coalesce(extract(epoch from now() - min(created_at) filter (
        where state in ('ready', 'waiting'))), 0)::float8 as oldest_ready_s,
    count(*) filter (
        where state = 'done' and finished_at > now() - make_interval(secs => %(window_s)s)
    ) as processed
from journal.lane_entries
where lane = %(lane)s

-- name: held_events
-- The held events, oldest first, with why they failed.
select id, key, last_error_code, last_error_message
from journal.lane_entries
where lane = %(lane)s and state = 'parked'
order by id
limit %(limit)s

-- name: publisher_lock_shared
-- A publisher's side of the switch (S4): many publish at once; a switch waits for them.
select pg_advisory_xact_lock_shared(hashtext('bossa.sync.publisher'))

-- name: publisher_lock
-- The switch's side: no event is published while the publisher is being switched.
select pg_advisory_xact_lock(hashtext('bossa.sync.publisher'))

-- name: publisher
select connected, changed_by, changed_at from sync.publisher

-- name: set_publisher
update sync.publisher set connected = %(connected)s, changed_by = %(actor)s, changed_at = now()
returning connected

-- name: outbox_add
-- Events published while the publisher is disconnected, in order.
insert into sync.outbox (lane, key, kind, payload)
select lane, key, kind, payload
from unnest(%(lanes)s::text[], %(keys)s::text[], %(kinds)s::text[], %(payloads)s::jsonb[])
     with ordinality as t (lane, key, kind, payload, ord)
order by ord

-- name: outbox_take
-- Every event of the outbox, oldest first, removed in the transaction that enqueues them.
with moved as (delete from sync.outbox returning id, lane, key, kind, payload)
select lane, key, kind, payload from moved order by id

-- name: outbox
select count(*) as n,
       coalesce(extract(epoch from now() - min(created_at)), 0)::float8 as oldest_s
from sync.outbox

-- name: log_control
insert into sync.control_log (target, instance, action, actor, reason, moved)
values (%(target)s, %(instance)s, %(action)s, %(actor)s, %(reason)s, %(moved)s)

-- name: control_log
select target, instance, action, actor, reason, moved, at
from sync.control_log order by id desc limit %(limit)s

-- name: routes_of
select customer_id, instance from sync.account_routes where customer_id = any (%(customers)s)

-- name: set_route
insert into sync.account_routes (customer_id, instance, created_by)
values (%(customer)s, %(instance)s, %(actor)s)
on conflict (customer_id) do update set instance = excluded.instance,
    created_by = excluded.created_by, created_at = now()

-- name: listener_register
insert into sync.listeners (instance) values (%(instance)s) on conflict do nothing

-- name: listener
select instance, connected, state, changed_by, changed_at, seen_at
from sync.listeners where instance = %(instance)s

-- name: set_listener_wish
insert into sync.listeners (instance, connected, changed_by, changed_at)
values (%(instance)s, %(connected)s, %(actor)s, now())
on conflict (instance) do update set connected = excluded.connected,
    changed_by = excluded.changed_by, changed_at = now()

-- name: set_listener_state
update sync.listeners set state = %(state)s, seen_at = now() where instance = %(instance)s

-- name: account_announced
-- Account data: an account the pipeline knows of (S10: no details until first usage).
insert into sync.pipeline_accounts (instance, account_id, customer_id, status, last_entry)
values (%(instance)s, %(account)s, %(customer)s, %(status)s, %(entry)s)
on conflict (instance, account_id) do update set status = excluded.status,
    customer_id = coalesce(excluded.customer_id, sync.pipeline_accounts.customer_id),
    last_entry = excluded.last_entry, updated_at = now()

-- name: account_balances
-- Balance data: the account's balances as the ledger had them when the event applied.
insert into sync.pipeline_accounts (instance, account_id, customer_id, status, balances, last_entry)
values (%(instance)s, %(account)s, %(customer)s, 'open', %(balances)s, %(entry)s)
on conflict (instance, account_id) do update set balances = excluded.balances,
    last_entry = excluded.last_entry, updated_at = now()

-- name: account_discounts
insert into sync.pipeline_accounts (instance, account_id, customer_id, status, discounts, last_entry)
values (%(instance)s, %(account)s, %(customer)s, 'open', %(discounts)s, %(entry)s)
on conflict (instance, account_id) do update
    set discounts = sync.pipeline_accounts.discounts || excluded.discounts,
        last_entry = excluded.last_entry, updated_at = now()

-- name: cycle_accounts
-- The accounts a bill run of the cycle bills (the ledger's published view), for rating's
-- S14 hold.
select id from ledger.billing_accounts
where bill_cycle = %(cycle)s and status <> 'closed'
order by id

-- name: billing_started
insert into sync.billing_cycles (instance, cycle, run_id, started_at, completed_at, last_entry)
values (%(instance)s, %(cycle)s, %(run)s, now(), null, %(entry)s)
on conflict (instance, cycle) do update set run_id = excluded.run_id, started_at = now(),
    completed_at = null, last_entry = excluded.last_entry

-- name: billing_completed
insert into sync.billing_cycles (instance, cycle, run_id, started_at, completed_at, last_entry)
values (%(instance)s, %(cycle)s, %(run)s, null, now(), %(entry)s)
on conflict (instance, cycle) do update set completed_at = now(),
    last_entry = excluded.last_entry

-- name: recycle_processed
insert into sync.recycle_requests (entry_id, instance, requested_by, reason)
values (%(entry)s, %(instance)s, %(by)s, %(reason)s)

-- name: ready_by_lane
-- The READY backlog of every sync lane (S13 counts only READY events), for the gauge.
-- Each lane counted as ready_count does, through the indexes.
select l.lane, (
    select count(*) from journal.lane_entries e where e.lane = l.lane and e.state_enum = 'ready'
) + (
    select count(*) from journal.lane_entries e
    where e.lane = l.lane and e.key is not null and e.state_enum = 'waiting'
) as n
from (select 'sync.pipeline.' || n as lane from generate_series(0, 7) n) l

-- name: ready_count
-- S13: the lane's READY events (due or waiting for their time); only these count.
-- Ready ones through the journal's ready index, waiting ones (always keyed) through its
-- unfinished-key index: never a scan of the finished entries the journal keeps.
select (
    select count(*) from journal.lane_entries where lane = %(lane)s and state_enum = 'ready'
) + (
    select count(*) from journal.lane_entries
    where lane = %(lane)s and key is not null and state_enum = 'waiting'
) as n
