-- Named queries of customers.

-- name: product_exists
-- Is there a product with this code?
select exists (select 1 from customers.products where code = %(code)s) as found

-- name: customer_exists
-- Is there a customer with this id?
select exists (select 1 from customers.customers where id = %(id)s) as found

-- name: contracts_of_customer
-- A customer's contracts, terminated ones included, by SA_ID.
select sa_id, customer_id, product_code, status from customers.contracts
where customer_id = %(customer)s
order by sa_id

-- name: set_contract_status
-- A contract's service state, with who changed it and when.
update customers.contracts
set status = %(status)s, status_changed_at = now(), status_changed_by = %(actor)s
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

-- name: add_contract
-- A contract, unless its SA_ID exists already.
insert into customers.contracts (sa_id, customer_id, product_code)
values (%s, %s, %s) on conflict do nothing

-- name: contract_listing
-- Every contract with its customer's and product's names, for the tour.
select c.sa_id, c.customer_id, cu.name as customer, c.product_code, p.name as product
from customers.contracts c
join customers.customers cu on cu.id = c.customer_id
join customers.products p on p.code = c.product_code
order by c.sa_id
