-- Named queries of provisioning, run only by store.py.

-- name: division
-- One division (P7).
select division, server_type::text as server_type, server_ip, server_port, server_url,
       server_name, server_used, credentials, timeout_ms, down_until, last_error, updated_at,
       updated_by
from provisioning.divisions
where division = %(division)s

-- name: divisions
-- Every division, for operators.
select division, server_type::text as server_type, server_ip, server_port, server_url,
       server_name, server_used, credentials, timeout_ms, down_until, last_error, updated_at,
       updated_by
from provisioning.divisions
order by division

-- name: insert_division
-- A new division with its type; its other values follow with update_division, in the
-- same transaction, so that the table's defaults stay the only defaults.
insert into provisioning.divisions (division, server_type, created_by, updated_by)
values (%(division)s, %(server_type)s::provisioning.server_type, %(actor)s, %(actor)s)
on conflict (division) do nothing
returning division

-- name: update_division
-- Change the values given (a null leaves the column as it is).
update provisioning.divisions
set server_type = coalesce(%(server_type)s::provisioning.server_type, server_type),
    server_url = coalesce(%(server_url)s::text, server_url),
    server_ip = coalesce(%(server_ip)s::text, server_ip),
    server_port = coalesce(%(server_port)s::integer, server_port),
    server_name = coalesce(%(server_name)s::text, server_name),
    server_used = coalesce(%(server_used)s::boolean, server_used),
    timeout_ms = coalesce(%(timeout_ms)s::integer, timeout_ms),
    credentials = credentials || coalesce(%(credentials)s::jsonb, '{}'),
    updated_at = now(),
    updated_by = %(actor)s
where division = %(division)s
returning division

-- name: declare_lane
-- The division's buffer is a journal lane that provisioning owns.
select journal.declare_lane(%(lane)s, 'provisioning', %(actor)s)

-- name: known_down
-- P4a: is the division known to be down right now?
select coalesce(down_until > now(), false) as down
from provisioning.divisions where division = %(division)s

-- name: mark_down
-- P4a: a call found the division unreachable; orders skip the call until down_until.
update provisioning.divisions
set down_until = now() + make_interval(secs => %(hold_s)s), last_error = %(error)s
where division = %(division)s

-- name: mark_up
-- The division answered again.
update provisioning.divisions set down_until = null
where division = %(division)s and down_until is not null

-- name: current_plan_command
-- A plan command's current version, locked while it is set again.
select p.version, p.position, v.command, v.bind_method
from provisioning.plan_commands p
join provisioning.plan_versions v using (product_code, intf_code, division, version)
where p.product_code = %(product)s and p.intf_code = %(intf_code)s
  and p.division = %(division)s
for update of p

-- name: insert_plan_command
-- A new plan command at version 1 (its version row follows in the same transaction); a
-- concurrent twin inserts nothing and the caller reads the winner's.
insert into provisioning.plan_commands
    (product_code, intf_code, division, position, version, created_by)
values (%(product)s, %(intf_code)s, %(division)s, %(position)s, 1, %(actor)s)
on conflict (product_code, intf_code, division) do nothing
returning version

-- name: insert_plan_version
-- A version of a plan command; versions are never changed or removed.
insert into provisioning.plan_versions
    (product_code, intf_code, division, version, command, bind_method, created_by)
values (%(product)s, %(intf_code)s, %(division)s, %(version)s, %(command)s, %(bind_method)s,
        %(actor)s)

-- name: set_plan_command
-- A plan command's current version and position.
update provisioning.plan_commands
set version = %(version)s, position = %(position)s, created_at = now(), created_by = %(actor)s
where product_code = %(product)s and intf_code = %(intf_code)s and division = %(division)s

-- name: plan
-- A product's commands for one order type, at their current versions, in plan order.
select p.product_code, p.intf_code, p.division, p.version, d.server_type::text as server_type,
       v.command, v.bind_method
from provisioning.plan_commands p
join provisioning.plan_versions v using (product_code, intf_code, division, version)
join provisioning.divisions d using (division)
where p.product_code = %(product)s and p.intf_code = %(intf_code)s
order by p.position, p.division

-- name: plan_versions
-- The plan versions that buffered commands name, for rendering them at delivery.
select v.product_code, v.intf_code, v.division, v.version, d.server_type::text as server_type,
       v.command, v.bind_method
from unnest(%(products)s::text[], %(intf_codes)s::text[], %(divisions)s::text[],
            %(versions)s::integer[]) as k (product_code, intf_code, division, version)
join provisioning.plan_versions v using (product_code, intf_code, division, version)
join provisioning.divisions d on d.division = v.division

-- name: plan_intf_codes
-- The order types a product has a plan for.
select distinct intf_code from provisioning.plan_commands
where product_code = %(product)s order by intf_code

-- name: plans
-- Every plan command (of a product, or all) at its current version, for operators.
select p.product_code, p.intf_code, p.position, p.division,
       d.server_type::text as server_type, p.version, v.command, v.bind_method
from provisioning.plan_commands p
join provisioning.plan_versions v using (product_code, intf_code, division, version)
join provisioning.divisions d using (division)
where %(product)s::text is null or p.product_code = %(product)s
order by p.product_code, p.intf_code, p.position, p.division

-- name: division_has_plans
-- Does any plan command name this division? (Its server type then stays as it is.)
select exists (
    select from provisioning.plan_commands where division = %(division)s
) as found

-- name: order_by_key
-- An order by its idempotency key, for replays.
select * from provisioning.orders where idempotency_key = %(key)s

-- name: order_by_wo_no
-- An order by its work order number.
select * from provisioning.orders where wo_no = %(wo_no)s

-- name: next_wo_no
-- A new work order number.
select 'WO-' || lpad(nextval('provisioning.wo_no_seq')::text, 9, '0') as wo_no

-- name: insert_order
-- Record an accepted order; a concurrent twin with the same key inserts nothing.
insert into provisioning.orders
    (wo_no, idempotency_key, request_hash, product_code, sa_id, cust_id, intf_code, bind_data,
     channel, status, created_by)
values (%(wo_no)s, %(idempotency_key)s, %(request_hash)s, %(product)s, %(sa_id)s, %(cust_id)s,
        %(intf_code)s, %(bind_data)s, %(channel)s, 'accepted', %(actor)s)
on conflict do nothing
returning wo_no

-- name: complete_order
-- The order's result once every division has been provisioned or buffered.
update provisioning.orders
set status = 'completed', result = %(result)s, completed_at = now()
where wo_no = %(wo_no)s
returning *

-- name: complete_stranded_orders
-- Orders still accepted past the grace with none of their commands under a claim: the
-- process that accepted them died before recording its direct calls' outcome (a live
-- one holds its claims, heartbeating them, until the outcome commits with its acks).
-- Each is completed from the journal's outcome: a division's route is direct when the
-- log says its command was delivered directly, else buffered (the backup daemon has
-- it). Orders another daemon is completing are skipped.
with stranded as (
    select o.wo_no, o.sa_id
    from provisioning.orders o
    where o.status = 'accepted'
      and o.received_at < now() - make_interval(secs => %(after_s)s)
      and not exists (
          select 1 from provisioning.commands c
          where c.sa_id = o.sa_id and c.wo_no = o.wo_no and c.state = 'taken')
    order by o.received_at
    limit %(limit)s
    for update of o skip locked
),
routes as (
    select s.wo_no,
           jsonb_object_agg(c.division,
                            case when l.mode = 'direct' then 'direct' else 'buffered' end)
               as result
    from stranded s
    join provisioning.commands c on c.sa_id = s.sa_id and c.wo_no = s.wo_no
    left join provisioning.log l on l.entry_id = c.entry_id
    group by s.wo_no
)
update provisioning.orders o
set status = 'completed', result = coalesce(r.result, '{}'), completed_at = now()
from stranded s
left join routes r on r.wo_no = s.wo_no
where o.wo_no = s.wo_no
returning o.wo_no

-- name: upsert_service_record
-- P2: the service record follows the order (status from the order type).
insert into provisioning.service_records
    (sa_id, cust_id, product_code, status, attributes, last_wo_no)
values (%(sa_id)s, %(cust_id)s, %(product)s, %(status)s, %(attributes)s, %(wo_no)s)
on conflict (sa_id) do update
set cust_id = coalesce(excluded.cust_id, provisioning.service_records.cust_id),
    product_code = excluded.product_code,
    status = excluded.status,
    attributes = provisioning.service_records.attributes || excluded.attributes,
    last_wo_no = excluded.last_wo_no,
    updated_at = now()

-- name: log_deliveries
-- P11: successful provisionings, direct or from the buffer, once per journal entry; in
-- the transaction that acks them, so a logged delivery is an acked one. The arrays go in
-- binary: a backup daemon logs 500 at a time, and psycopg's text format runs a regular
-- expression over every element of an array literal.
insert into provisioning.log (entry_id, division, sa_id, wo_no, intf_code, mode, attempts)
select * from unnest(
    %(entry_ids)b::bigint[], %(divisions)b::text[], %(sa_ids)b::text[], %(wo_nos)b::text[],
    %(intf_codes)b::text[], %(modes)b::text[], %(attempts)b::integer[]
)
on conflict (entry_id) do nothing

-- name: log_backup_deliveries
-- P11 for the commands a backup daemon delivered, read from their entries through the
-- commands view (what it validated and delivered, unchanged while it holds them), in
-- the ack's transaction like log_deliveries: one array of ids crosses the wire instead
-- of seven arrays of fields, which cost the daemon's one Python thread more than the
-- delivery itself.
insert into provisioning.log (entry_id, division, sa_id, wo_no, intf_code, mode, attempts)
select c.entry_id, c.division, c.sa_id, c.wo_no, c.intf_code, 'backup', c.attempts
from provisioning.commands c
where c.entry_id = any (%(entry_ids)b::bigint[])
on conflict (entry_id) do nothing

-- name: log_for
-- The provisioning log of a contract or a work order.
select entry_id, division, sa_id, wo_no, intf_code, mode, attempts, delivered_at
from provisioning.log
where (%(sa_id)s::text is null or sa_id = %(sa_id)s)
  and (%(wo_no)s::text is null or wo_no = %(wo_no)s)
order by delivered_at, entry_id
limit %(limit)s

-- name: take_receipts
-- The next receipts of a product's receive table, skipping any whose contract has an
-- earlier receipt still waiting (held by another daemon): per-contract order.
select r.id, r.product_code, r.sa_id, r.cust_id, r.intf_code, r.wo_no, r.bind_data
from provisioning.receipts r
where r.product_code = %(product)s and r.status = 'new'
  and not exists (
      select 1 from provisioning.receipts earlier
      where earlier.product_code = r.product_code and earlier.status = 'new'
        and earlier.sa_id is not distinct from r.sa_id and earlier.id < r.id
  )
order by r.id
limit %(limit)s
for update skip locked

-- name: finish_receipt
-- Mark a receipt processed (done or rejected with the reason).
update provisioning.receipts
set status = %(status)s, error = %(error)s, wo_no = coalesce(%(wo_no)s, wo_no),
    processed_at = now()
where product_code = %(product)s and id = %(id)s

-- name: buffer
-- A division's buffer with every column of the seed's buffers (P8, P9), oldest first.
select entry_id, state, attempts, division, startdate, startdate as recv_date, enddate,
       sa_id, wo_no, ins_date, intf_code, cust_id, plan_version, command, bind_data,
       bind_method, errcode, errmsg, errdate, logname
from provisioning.commands
where lane = %(lane)s
  and (%(state)s::text is null or state = %(state)s)
  and (%(errcode)s::text is null or errcode = %(errcode)s)
  and (%(sa_id)s::text is null or sa_id = %(sa_id)s)
  and (%(older_than_s)s::float8 is null
       or startdate < now() - make_interval(secs => %(older_than_s)s::float8))
order by entry_id
limit %(limit)s

-- name: command_exists
-- Is this journal entry a provisioning command?
select exists (select from provisioning.commands where entry_id = %(id)s) as found

-- name: division_states
-- Every division and whether it is known to be down now, for the metrics gauge.
select division, coalesce(down_until > now(), false) as down
from provisioning.divisions order by division
