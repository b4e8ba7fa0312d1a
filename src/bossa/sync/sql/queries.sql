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
    where lane = %(lane)s and key is not null and state = 'parked'
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
