-- Named queries of provisioning.

-- name: division
-- One division (P7).
select * from provisioning.divisions where division = %(division)s

-- name: divisions
-- Every division, for operators.
select division, server_type::text as server_type, server_ip, server_port, server_url,
       server_name, server_used, credentials, timeout_ms, down_until, last_error, updated_at,
       updated_by
from provisioning.divisions
order by division

-- name: product
-- Does the product exist?
select code from customers.products where code = %(product)s

-- name: upsert_plan_command
-- Add or replace one division's command in a product's plan for an order type.
insert into provisioning.plan_commands
    (product_code, intf_code, division, position, command, bind_method, created_by)
values (%(product)s, %(intf_code)s, %(division)s, %(position)s, %(command)s, %(bind_method)s,
        %(actor)s)
on conflict (product_code, intf_code, division) do update
set position = excluded.position, command = excluded.command,
    bind_method = excluded.bind_method, created_at = now(), created_by = excluded.created_by

-- name: plan
-- A product's commands for one order type, in plan order.
select p.division, d.server_type::text as server_type, p.command, p.bind_method
from provisioning.plan_commands p
join provisioning.divisions d using (division)
where p.product_code = %(product)s and p.intf_code = %(intf_code)s
order by p.position, p.division

-- name: plan_intf_codes
-- The order types a product has a plan for.
select distinct intf_code from provisioning.plan_commands
where product_code = %(product)s order by intf_code

-- name: plans
-- Every plan command, for operators.
select p.product_code, p.intf_code, c.name as order_type, p.position, p.division,
       d.server_type::text as server_type, p.command, p.bind_method
from provisioning.plan_commands p
join provisioning.divisions d using (division)
join provisioning.intf_codes c using (intf_code)
order by p.product_code, p.intf_code, p.position, p.division

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

-- name: log_delivery
-- P11: record a successful provisioning (once per journal entry).
insert into provisioning.log (entry_id, division, sa_id, wo_no, intf_code, mode, attempts)
values (%(entry_id)s, %(division)s, %(sa_id)s, %(wo_no)s, %(intf_code)s, %(mode)s, %(attempts)s)
on conflict (entry_id) do nothing

-- name: log_deliveries
-- P11 for a batch acked by a backup daemon, in the ack's transaction.
insert into provisioning.log (entry_id, division, sa_id, wo_no, intf_code, mode, attempts)
select e.id, e.payload ->> 'division', e.key, e.payload ->> 'wo_no', e.payload ->> 'intf_code',
       'backup', e.attempts
from journal.entries e
where e.id = any (%(ids)s::bigint[])
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
-- A division's buffer with the seed's columns, oldest first.
select e.id as entry_id, e.state::text as state, e.attempts,
       e.payload ->> 'division' as division, e.created_at as startdate,
       case when e.state = 'done' then e.finished_at end as enddate,
       e.key as sa_id, e.payload ->> 'wo_no' as wo_no, e.payload ->> 'intf_code' as intf_code,
       e.payload ->> 'cust_id' as cust_id, e.payload -> 'command' as command,
       e.payload -> 'bind_data' as bind_data, e.errors -> -1 ->> 'code' as errcode,
       e.errors -> -1 ->> 'message' as errmsg, (e.errors -> -1 ->> 'at')::timestamptz as errdate,
       e.payload ->> 'logname' as logname
from journal.entries e
where e.lane = %(lane)s
  and (%(state)s::text is null or e.state::text = %(state)s)
  and (%(older_than_s)s::float8 is null
       or e.created_at < now() - make_interval(secs => %(older_than_s)s::float8))
order by e.id
limit %(limit)s
