-- The whole current schema of customers; migrations/ are the steps that build it.
create schema customers;

-- The catalogue's products: described, retired rather than deleted (contracts and bills
-- refer to them). Their prices are versions in customers.product_prices.
create table customers.products (
    code        text        primary key check (code ~ '^[A-Z][A-Z0-9_]{0,31}$'),
    name        text        not null,
    created_at  timestamptz not null default now(),
    created_by  text        not null default current_user,
    description text        not null default '' check (length(description) <= 2000),
    status      text        not null default 'active' check (status in ('active', 'retired')),
    updated_at  timestamptz,
    updated_by  text
);

-- A product's prices, each valid from a date (inclusive) to a date (exclusive; null while
-- open). A price change from D closes the open version at D and opens one from D, so bills
-- for days before D keep the old price. Versions are never rewritten: the only change a
-- version accepts is being closed once (customers.price_version_guard). Money is an
-- integer of minor units of the version's currency, bounded like every amount (10^15).
-- Usage tariffs (rating, issue 14) get a table of their own beside this one, versioned
-- the same way; this table holds the fees a contract owes for existing.
create table customers.product_prices (
    id           bigint      generated always as identity primary key,
    product_code text        not null references customers.products (code),
    kind         text        not null check (kind in ('recurring', 'one_off')),
    period       text        check (period in ('monthly', 'quarterly', 'yearly')),
    amount       bigint      not null check (amount between 0 and 1000000000000000),
    currency     char(3)     not null check (currency ~ '^[A-Z]{3}$'),
    valid_from   date        not null check (valid_from between '1900-01-01' and '9999-12-31'),
    valid_to     date        check (valid_to <= '9999-12-31'),
    created_at   timestamptz not null default now(),
    created_by   text        not null default current_user,
    constraint product_prices_period_of_kind check ((kind = 'recurring') = (period is not null)),
    constraint product_prices_valid_range check (valid_to is null or valid_to > valid_from),
    constraint product_prices_version unique (product_code, kind, valid_from)
);

-- No two versions of a product's price of one kind overlap, and a version, once closed,
-- never changes: whoever writes (the service, bulk import, SQL by hand) gets the same
-- refusal. The product's row is locked first, so two writers of one product's prices
-- take turns and neither misses the other's version.
create function customers.price_version_guard() returns trigger
language plpgsql as $$
begin
    if tg_op = 'DELETE' then
        raise exception 'price versions are never deleted'
            using errcode = 'check_violation', constraint = 'product_prices_immutable';
    end if;
    if tg_op = 'UPDATE' and (
        old.valid_to is not null
        or (new.product_code, new.kind, new.period, new.amount, new.currency, new.valid_from)
           is distinct from
           (old.product_code, old.kind, old.period, old.amount, old.currency, old.valid_from)
    ) then
        raise exception 'a price version is only ever closed, once'
            using errcode = 'check_violation', constraint = 'product_prices_immutable';
    end if;
    perform 1 from customers.products where code = new.product_code for no key update;
    if exists (
        select 1 from customers.product_prices p
        where p.product_code = new.product_code and p.kind = new.kind and p.id <> new.id
          and daterange(p.valid_from, p.valid_to) && daterange(new.valid_from, new.valid_to)
    ) then
        raise exception 'price versions of one product and kind must not overlap'
            using errcode = 'check_violation', constraint = 'product_prices_overlap';
    end if;
    return new;
end
$$;

create trigger product_prices_guard
    before insert or update or delete on customers.product_prices
    for each row execute function customers.price_version_guard();

-- Customers (CUST_ID): contact, and closed rather than deleted.
create table customers.customers (
    id          text        primary key,   -- CUST_ID
    name        text        not null,
    msisdn      text,
    created_at  timestamptz not null default now(),
    created_by  text        not null default current_user,
    email       text        check (length(email) <= 254),
    status      text        not null default 'active' check (status in ('active', 'closed')),
    updated_at  timestamptz,
    updated_by  text
);

-- Contracts (SA_ID): a customer's product, billed to one billing account (ledger's,
-- checked through ledger's service when the contract is made: no foreign key crosses
-- modules), running from start_date (inclusive) to end_date (exclusive).
create table customers.contracts (
    sa_id        text        primary key,  -- SA_ID: the contract, the seeds' ordering key
    customer_id  text        not null,  -- customers.customers, checked per statement below
    product_code text        not null,  -- customers.products, checked per statement below
    status       text        not null default 'active'
                             check (status in ('active', 'suspended', 'terminated')),
    created_at   timestamptz not null default now(),
    created_by   text        not null default current_user,
    -- Who last changed `status`, when and why (customers.set_contract_status).
    status_changed_at timestamptz,
    status_changed_by text,
    -- Null only for a contract from before accounts were named that no account matched.
    account_id    text,
    start_date    date not null default current_date,
    end_date      date,
    status_reason text check (length(status_reason) <= 500),
    updated_at    timestamptz,
    updated_by    text,
    constraint contracts_dates check (end_date is null or end_date >= start_date),
    constraint contracts_start_bounded check (start_date between '1900-01-01' and '9999-12-31')
);
create index contracts_customer on customers.contracts (customer_id);
create index contracts_account on customers.contracts (account_id, sa_id);
create index contracts_product on customers.contracts (product_code, sa_id);

-- A contract's references (customer, product, billing account) are checked once per
-- statement over the rows it wrote, not by foreign keys row by row (a bulk import writes
-- 50,000 rows a statement): the same guarantee for every writer, because what is referred
-- to is never deleted and its key never changes (customers.kept_forever; ledger keeps its
-- accounts the same way). The account is checked through ledger's published view.

-- The rows a statement wrote (`written`, its transition table) refer only to what
-- exists; otherwise the statement fails as a foreign key would, naming the constraint
-- it replaces (bossa.db.translate answers it as a reference to nothing).
create function customers.contracts_refer_to_what_exists() returns trigger
language plpgsql as $$
declare
    v_missing text;
begin
    -- Each distinct value once (a customer has a few contracts, a product many), by an
    -- anti-join per reference, so each takes its own best plan (index probes for a few
    -- rows, a hash for a chunk of an import).
    select w.customer_id into v_missing
    from (select distinct customer_id from written) w
    where not exists (select 1 from customers.customers c where c.id = w.customer_id)
    limit 1;
    if found then
        raise exception 'a contract refers to customer % that does not exist', v_missing
            using errcode = 'foreign_key_violation', constraint = 'contracts_customer_id_fkey',
                  table = 'contracts', schema = 'customers';
    end if;
    select w.product_code into v_missing
    from (select distinct product_code from written) w
    where not exists (select 1 from customers.products p where p.code = w.product_code)
    limit 1;
    if found then
        raise exception 'a contract refers to product % that does not exist', v_missing
            using errcode = 'foreign_key_violation', constraint = 'contracts_product_code_fkey',
                  table = 'contracts', schema = 'customers';
    end if;
    select w.account_id into v_missing
    from (select distinct account_id from written where account_id is not null) w
    where not exists (select 1 from ledger.account_rows a where a.id = w.account_id)
    limit 1;
    if found then
        raise exception 'a contract refers to account % that does not exist', v_missing
            using errcode = 'foreign_key_violation', constraint = 'contracts_account_id_fkey',
                  table = 'contracts', schema = 'customers';
    end if;
    return null;
end
$$;

create trigger contracts_references_on_insert
    after insert on customers.contracts referencing new table as written
    for each statement execute function customers.contracts_refer_to_what_exists();
-- An update is checked for the rows whose references it changed, as a foreign key is:
-- a status change does not re-check what it did not touch (nor trip over an account a
-- contract named before accounts were checked at all).
create function customers.contracts_changed_refer_to_what_exists() returns trigger
language plpgsql as $$
declare
    v_missing text;
begin
    -- Only the rows the update gave another SA_ID, customer, product or account.
    select w.customer_id into v_missing
    from (
        select distinct c.customer_id from written c where not exists (
            select 1 from previous p
            where p.sa_id = c.sa_id and p.customer_id = c.customer_id
              and p.product_code = c.product_code
              and p.account_id is not distinct from c.account_id
        )
    ) w
    where not exists (select 1 from customers.customers c where c.id = w.customer_id)
    limit 1;
    if found then
        raise exception 'a contract refers to customer % that does not exist', v_missing
            using errcode = 'foreign_key_violation', constraint = 'contracts_customer_id_fkey',
                  table = 'contracts', schema = 'customers';
    end if;
    select w.product_code into v_missing
    from (
        select distinct c.product_code from written c where not exists (
            select 1 from previous p
            where p.sa_id = c.sa_id and p.customer_id = c.customer_id
              and p.product_code = c.product_code
              and p.account_id is not distinct from c.account_id
        )
    ) w
    where not exists (select 1 from customers.products p where p.code = w.product_code)
    limit 1;
    if found then
        raise exception 'a contract refers to product % that does not exist', v_missing
            using errcode = 'foreign_key_violation', constraint = 'contracts_product_code_fkey',
                  table = 'contracts', schema = 'customers';
    end if;
    select w.account_id into v_missing
    from (
        select distinct c.account_id from written c
        where c.account_id is not null and not exists (
            select 1 from previous p
            where p.sa_id = c.sa_id and p.customer_id = c.customer_id
              and p.product_code = c.product_code
              and p.account_id is not distinct from c.account_id
        )
    ) w
    where not exists (select 1 from ledger.account_rows a where a.id = w.account_id)
    limit 1;
    if found then
        raise exception 'a contract refers to account % that does not exist', v_missing
            using errcode = 'foreign_key_violation', constraint = 'contracts_account_id_fkey',
                  table = 'contracts', schema = 'customers';
    end if;
    return null;
end
$$;

create trigger contracts_references_on_update
    after update on customers.contracts
    referencing old table as previous new table as written
    for each statement execute function customers.contracts_changed_refer_to_what_exists();

-- What contracts refer to stays: no delete, no truncate, no change of key. A customer is
-- closed and a product retired instead (their status), which keeps their history too.
create function customers.kept_forever() returns trigger
language plpgsql as $$
begin
    raise exception '%.% rows are never deleted nor their keys changed (close or retire them)',
        tg_table_schema, tg_table_name
        using errcode = 'check_violation', constraint = tg_table_name || '_kept',
              table = tg_table_name, schema = tg_table_schema;
end
$$;

create trigger customers_kept before delete on customers.customers
    for each statement execute function customers.kept_forever();
create trigger customers_kept_truncate before truncate on customers.customers
    for each statement execute function customers.kept_forever();
create trigger customers_key_kept before update of id on customers.customers
    for each row when (old.id is distinct from new.id)
    execute function customers.kept_forever();
create trigger products_kept before delete on customers.products
    for each statement execute function customers.kept_forever();
create trigger products_kept_truncate before truncate on customers.products
    for each statement execute function customers.kept_forever();
create trigger products_key_kept before update of code on customers.products
    for each row when (old.code is distinct from new.code)
    execute function customers.kept_forever();

-- published: customers.product_codes
-- The products that exist, for SQL that must check a product code.
create view customers.product_codes as
select code from customers.products;

-- published: customers.contract_fees
-- Each contract with its product's monthly price valid today, and its currency. Kept for
-- bill runs that predate price versions; customers.contract_terms and
-- customers.price_versions replace it.
create view customers.contract_fees as
select c.sa_id, c.customer_id, c.product_code, c.status, p.amount as monthly_fee, p.currency
from customers.contracts c
join customers.product_prices p
  on p.product_code = c.product_code and p.kind = 'recurring' and p.period = 'monthly'
 and p.valid_from <= current_date and (p.valid_to is null or p.valid_to > current_date);

-- published: customers.contract_terms
-- Each contract as billing and import read it: whose it is, the account it is billed to
-- (null only for a contract from before accounts were named that no account matched),
-- its product, when it runs (start inclusive, end exclusive) and its state.
create view customers.contract_terms as
select sa_id, customer_id, account_id, product_code, status, start_date, end_date,
       status_changed_at
from customers.contracts;

-- published: customers.price_versions
-- Every version of every product's prices: from valid_from (inclusive) to valid_to
-- (exclusive; null while open), amount in minor units of currency.
create view customers.price_versions as
select product_code, kind, period, amount, currency, valid_from, valid_to
from customers.product_prices;

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
