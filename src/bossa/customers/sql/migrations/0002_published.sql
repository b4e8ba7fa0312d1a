-- What other modules may read of customers, as published views (their SQL names these,
-- never the tables), and who last changed a contract's status (billing's dunning and
-- restores now go through customers' own set_contract_status, which records it).

alter table customers.contracts
    add column status_changed_at timestamptz,
    add column status_changed_by text;

-- published: customers.product_codes
-- The products that exist, for SQL that must check a product code.
create view customers.product_codes as
select code from customers.products;

-- published: customers.contract_fees
-- Each contract with its product's monthly fee and currency: what a bill run charges.
-- A plain join: the planner inlines it, so a bill run's plan is the same as on the tables.
create view customers.contract_fees as
select c.sa_id, c.customer_id, c.product_code, c.status, p.monthly_fee, p.currency
from customers.contracts c
join customers.products p on p.code = c.product_code;
