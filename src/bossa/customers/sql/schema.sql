-- The whole current schema of customers; migrations/ are the steps that build it.
create schema customers;

create table customers.products (
    code        text        primary key check (code ~ '^[A-Z][A-Z0-9_]{0,31}$'),
    name        text        not null,
    -- Money is an integer of minor units, in the product's currency.
    monthly_fee bigint      not null check (monthly_fee >= 0),
    currency    char(3)     not null,
    created_at  timestamptz not null default now(),
    created_by  text        not null default current_user
);

create table customers.customers (
    id          text        primary key,   -- CUST_ID
    name        text        not null,
    msisdn      text,
    created_at  timestamptz not null default now(),
    created_by  text        not null default current_user
);

create table customers.contracts (
    sa_id        text        primary key,  -- SA_ID: the contract, the seeds' ordering key
    customer_id  text        not null references customers.customers (id),
    product_code text        not null references customers.products (code),
    status       text        not null default 'active'
                             check (status in ('active', 'suspended', 'terminated')),
    created_at   timestamptz not null default now(),
    created_by   text        not null default current_user,
    -- Who last changed `status` and when (customers.set_contract_status).
    status_changed_at timestamptz,
    status_changed_by text
);
create index contracts_customer on customers.contracts (customer_id);

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
