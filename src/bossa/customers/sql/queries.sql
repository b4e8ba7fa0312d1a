-- Named queries of customers.

-- name: product_exists
-- Is there a product with this code?
select exists (select 1 from customers.products where code = %(code)s) as found

-- name: customer_exists
-- Is there a customer with this id?
select exists (select 1 from customers.customers where id = %(id)s) as found

-- name: contracts_of_customer
-- A customer's contracts, terminated ones included, by SA_ID.
select sa_id, customer_id, product_code, status, account_id from customers.contracts
where customer_id = %(customer)s
order by sa_id

-- name: contracts_of_customers
-- The contracts of several customers at once (a caller coalescing lookups), by SA_ID.
select sa_id, customer_id, product_code, status, account_id from customers.contracts
where customer_id = any(%(customers)s)
order by sa_id

-- name: contracts_of_account
-- The contracts billed to an account, terminated ones included, by SA_ID.
select sa_id, customer_id, product_code, status, account_id from customers.contracts
where account_id = %(account)s
order by sa_id

-- name: set_contract_status
-- A contract's service state, with who changed it, when and why.
update customers.contracts
set status = %(status)s, status_changed_at = now(), status_changed_by = %(actor)s,
    status_reason = %(reason)s
where sa_id = %(sa_id)s
returning sa_id

-- name: add_product
-- A product with its monthly price from 1900-01-01, unless its code exists already (the
-- sample loads twice harmlessly).
with product as (
    insert into customers.products (code, name) values (%s, %s)
    on conflict do nothing
    returning code
)
insert into customers.product_prices (product_code, kind, period, amount, currency, valid_from)
select code, 'recurring', 'monthly', %s, %s, date '1900-01-01' from product

-- name: add_customer
-- A customer, unless the id exists already.
insert into customers.customers (id, name, msisdn) values (%s, %s, %s) on conflict do nothing

-- name: add_sample_accounts
-- The sample's KRW billing accounts that are missing, through ledger's published import
-- function: a contract may name only an account that exists (checked per statement).
select ledger.import_accounts(
    array_agg(a.id), array_agg(a.customer_id), array_agg('KRW'::text), array_agg(null::text),
    array_agg(null::bigint), array_agg(null::text), array_agg(null::bigint),
    array_agg(null::text), 'sample'
) as opened
from unnest(%s::text[], %s::text[]) as a(id, customer_id)
where not exists (select 1 from ledger.account_rows r where r.id = a.id)

-- name: add_contract
-- A contract with the account it is billed to and its start, unless its SA_ID exists
-- already.
insert into customers.contracts (sa_id, customer_id, product_code, account_id, start_date)
values (%s, %s, %s, %s, %s) on conflict do nothing

-- name: contract_listing
-- Every contract with its customer's and product's names, for the tour.
select c.sa_id, c.customer_id, cu.name as customer, c.product_code, p.name as product
from customers.contracts c
join customers.customers cu on cu.id = c.customer_id
join customers.products p on p.code = c.product_code
order by c.sa_id

-- name: create_product
-- A new product; nothing when the code exists already.
insert into customers.products (code, name, description, created_by)
values (%(code)s, %(name)s, %(description)s, %(actor)s)
on conflict (code) do nothing
returning code

-- name: product
-- One product; `for no key update` when the caller changes it or its prices (the price
-- guard locks the same row, so writers of one product's prices take turns).
select * from customers.products where code = %(code)s

-- name: product_locked
-- One product, locked until the caller's transaction ends.
select * from customers.products where code = %(code)s for no key update

-- name: list_products
-- A page of products by code, after the cursor, optionally of one status.
select * from customers.products
where (%(status)s::text is null or status = %(status)s)
  and (%(after)s::text is null or code > %(after)s)
order by code
limit %(limit)s

-- name: update_product
-- A product's name or description; a null leaves it as it is.
update customers.products
set name = coalesce(%(name)s, name), description = coalesce(%(description)s, description),
    updated_at = now(), updated_by = %(actor)s
where code = %(code)s
returning code

-- name: set_product_status
-- Retire a product (it takes no new contracts), with who and when.
update customers.products set status = %(status)s, updated_at = now(), updated_by = %(actor)s
where code = %(code)s
returning code

-- name: prices_of_products
-- Every price version of the products, by product, kind and start.
select * from customers.product_prices
where product_code = any(%(codes)s::text[])
order by product_code, kind, valid_from

-- name: open_price
-- The latest version of a product's price of one kind (the one a change closes).
select * from customers.product_prices
where product_code = %(code)s and kind = %(kind)s
order by valid_from desc
limit 1

-- name: price_on
-- The version of a product's price of one kind that applies on a day.
select * from customers.product_prices
where product_code = %(code)s and kind = %(kind)s
  and valid_from <= %(day)s and (valid_to is null or valid_to > %(day)s)

-- name: close_price
-- Close an open version at a day (exclusive): the only change a version ever takes.
update customers.product_prices set valid_to = %(day)s
where id = %(id)s and valid_to is null
returning id

-- name: add_price
-- A price version.
insert into customers.product_prices
    (product_code, kind, period, amount, currency, valid_from, valid_to, created_by)
values (%(code)s, %(kind)s, %(period)s, %(amount)s, %(currency)s, %(valid_from)s,
        %(valid_to)s, %(actor)s)
returning id

-- name: create_customer
-- A new customer; nothing when the id exists already.
insert into customers.customers (id, name, msisdn, email, created_by)
values (%(id)s, %(name)s, %(msisdn)s, %(email)s, %(actor)s)
on conflict (id) do nothing
returning id

-- name: customer
-- One customer.
select * from customers.customers where id = %(id)s

-- name: customer_locked
-- One customer, locked until the caller's transaction ends (closing it, or a contract
-- made for it, waits for the other).
select * from customers.customers where id = %(id)s for no key update

-- name: list_customers
-- A page of customers by id, after the cursor, optionally of one status or MSISDN.
select * from customers.customers
where (%(status)s::text is null or status = %(status)s)
  and (%(msisdn)s::text is null or msisdn = %(msisdn)s)
  and (%(after)s::text is null or id > %(after)s)
order by id
limit %(limit)s

-- name: update_customer
-- A customer's name and contact; each field changes only when its flag says so.
update customers.customers
set name = coalesce(%(name)s, name),
    msisdn = case when %(set_msisdn)s then %(msisdn)s else msisdn end,
    email = case when %(set_email)s then %(email)s else email end,
    updated_at = now(), updated_by = %(actor)s
where id = %(id)s
returning id

-- name: set_customer_status
-- Close a customer, with who and when.
update customers.customers set status = %(status)s, updated_at = now(), updated_by = %(actor)s
where id = %(id)s
returning id

-- name: create_contract
-- A new contract; nothing when the SA_ID exists already.
insert into customers.contracts
    (sa_id, customer_id, account_id, product_code, start_date, created_by,
     status_changed_at, status_changed_by)
values (%(sa_id)s, %(customer)s, %(account)s, %(product)s, %(start_date)s, %(actor)s,
        now(), %(actor)s)
on conflict (sa_id) do nothing
returning sa_id

-- name: contract
-- One contract.
select * from customers.contracts where sa_id = %(sa_id)s

-- name: contract_locked
-- One contract, locked for a lifecycle change until the caller's transaction ends.
select * from customers.contracts where sa_id = %(sa_id)s for no key update

-- name: list_contracts
-- A page of contracts by SA_ID, after the cursor, optionally of one customer, account,
-- product or status.
select * from customers.contracts
where (%(customer)s::text is null or customer_id = %(customer)s)
  and (%(account)s::text is null or account_id = %(account)s)
  and (%(product)s::text is null or product_code = %(product)s)
  and (%(status)s::text is null or status = %(status)s)
  and (%(after)s::text is null or sa_id > %(after)s)
order by sa_id
limit %(limit)s

-- name: terminate_contract
-- End a contract at a day (exclusive), with who, when and why.
update customers.contracts
set status = 'terminated', end_date = %(end_date)s, status_changed_at = now(),
    status_changed_by = %(actor)s, status_reason = %(reason)s,
    updated_at = now(), updated_by = %(actor)s
where sa_id = %(sa_id)s
returning sa_id

-- name: change_contract
-- A contract's product or account.
update customers.contracts
set product_code = coalesce(%(product)s, product_code),
    account_id = coalesce(%(account)s, account_id),
    updated_at = now(), updated_by = %(actor)s
where sa_id = %(sa_id)s
returning sa_id

-- name: live_contracts_of_customer
-- How many of a customer's contracts are not terminated.
select count(*) as live from customers.contracts
where customer_id = %(customer)s and status <> 'terminated'
