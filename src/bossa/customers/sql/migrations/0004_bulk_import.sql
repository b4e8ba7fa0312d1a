-- Bulk import: the views it checks and exports through, the functions it applies through.

-- Bulk import (bossa.imports) reads and writes customers' rows only through what follows:
-- one view per kind it checks keys against and exports, and one function per kind that
-- inserts a chunk of rows it has checked, one array per column. The functions keep the
-- tables' own constraints as the last word: a row they refuse fails its chunk.

-- published: customers.customer_rows
-- Every customer, in the columns of a customers file (import checks CUST_IDs against it,
-- export writes it).
create view customers.customer_rows as
select id, name, msisdn, email, status from customers.customers;

-- published: customers.contract_rows
-- Every contract, in the columns of a contracts file.
create view customers.contract_rows as
select sa_id, customer_id, account_id, product_code, start_date, end_date, status,
       status_reason
from customers.contracts;

-- published: customers.product_rows
-- Every product with the prices valid today, in the columns of a products file: one
-- currency for both fees (a one-off fee in another currency than the recurring one is
-- left out), valid_from the recurring price's (else the one-off's).
create view customers.product_rows as
select p.code, p.name, p.description, p.status,
       r.amount as recurring_amount, r.period,
       case when o.currency = coalesce(r.currency, o.currency) then o.amount end
           as one_off_amount,
       coalesce(r.currency, o.currency) as currency,
       coalesce(r.valid_from, o.valid_from) as valid_from
from customers.products p
left join customers.product_prices r
  on r.product_code = p.code and r.kind = 'recurring'
 and r.valid_from <= current_date and (r.valid_to is null or r.valid_to > current_date)
left join customers.product_prices o
  on o.product_code = p.code and o.kind = 'one_off'
 and o.valid_from <= current_date and (o.valid_to is null or o.valid_to > current_date);

-- published: customers.import_customers
-- Insert checked customers; a missing status is active. Returns the rows inserted.
create function customers.import_customers(
    p_id text[], p_name text[], p_msisdn text[], p_email text[], p_status text[],
    p_actor text
) returns bigint
language sql as $$
    with inserted as (
        insert into customers.customers (id, name, msisdn, email, status, created_by)
        select id, name, msisdn, email, coalesce(status, 'active'), p_actor
        from unnest(p_id, p_name, p_msisdn, p_email, p_status) as u(id, name, msisdn, email, status)
        returning 1
    )
    select count(*) from inserted
$$;

-- published: customers.import_contracts
-- Insert checked contracts as they are (no provisioning order: a migrated contract's
-- service exists already); a missing start is today, a missing status active, and a
-- status other than active records who set it and when.
create function customers.import_contracts(
    p_sa_id text[], p_customer_id text[], p_account_id text[], p_product_code text[],
    p_start_date date[], p_end_date date[], p_status text[], p_status_reason text[],
    p_actor text
) returns bigint
language sql as $$
    with inserted as (
        insert into customers.contracts (
            sa_id, customer_id, account_id, product_code, start_date, end_date, status,
            status_reason, status_changed_at, status_changed_by, created_by
        )
        select sa_id, customer_id, account_id, product_code, coalesce(start_date, current_date),
               end_date, coalesce(status, 'active'), status_reason,
               case when coalesce(status, 'active') <> 'active' then now() end,
               case when coalesce(status, 'active') <> 'active' then p_actor end,
               p_actor
        from unnest(p_sa_id, p_customer_id, p_account_id, p_product_code, p_start_date,
                    p_end_date, p_status, p_status_reason)
             as u(sa_id, customer_id, account_id, product_code, start_date, end_date, status,
                  status_reason)
        returning 1
    )
    select count(*) from inserted
$$;

-- published: customers.import_products
-- Insert checked products and their prices from valid_from (missing: 1900-01-01, always):
-- a recurring version when recurring_amount is given, a one-off when one_off_amount is.
-- Returns the products inserted.
create function customers.import_products(
    p_code text[], p_name text[], p_description text[], p_status text[],
    p_recurring_amount bigint[], p_period text[], p_one_off_amount bigint[],
    p_currency text[], p_valid_from date[], p_actor text
) returns bigint
language plpgsql as $$
declare
    v_count bigint;
begin
    insert into customers.products (code, name, description, status, created_by)
    select code, name, coalesce(description, ''), coalesce(status, 'active'), p_actor
    from unnest(p_code, p_name, p_description, p_status) as u(code, name, description, status);
    get diagnostics v_count = row_count;
    insert into customers.product_prices (
        product_code, kind, period, amount, currency, valid_from, created_by
    )
    select code, 'recurring', period, amount, currency, coalesce(valid_from, date '1900-01-01'),
           p_actor
    from unnest(p_code, p_recurring_amount, p_period, p_currency, p_valid_from)
         as u(code, amount, period, currency, valid_from)
    where amount is not null;
    insert into customers.product_prices (
        product_code, kind, period, amount, currency, valid_from, created_by
    )
    select code, 'one_off', null, amount, currency, coalesce(valid_from, date '1900-01-01'),
           p_actor
    from unnest(p_code, p_one_off_amount, p_currency, p_valid_from)
         as u(code, amount, currency, valid_from)
    where amount is not null;
    return v_count;
end
$$;
