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
    customer_id  text        not null references customers.customers (id),
    product_code text        not null references customers.products (code),
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
