-- The whole current schema of the ledger; migrations/ are the steps that build it.
-- kept current with the postings, bills. Every transaction's postings sum to zero.
create schema ledger;

create table ledger.currencies (
    code      char(3) primary key check (code ~ '^[A-Z]{3}$'),
    exponent  smallint not null check (exponent between 0 and 4)   -- minor units: 10^exponent
);
insert into ledger.currencies (code, exponent) values
    ('KRW', 0), ('JPY', 0), ('CNY', 2), ('USD', 2), ('EUR', 2), ('GBP', 2), ('INR', 2),
    ('BHD', 3), ('KWD', 3);

-- A billing account: what bills, deposits and arrears belong to.
create table ledger.accounts (
    id           text primary key check (id <> ''),
    -- A customer (CUST_ID), checked through customers' service when the account opens
    -- (no foreign key: modules meet through published relations, not each other's tables).
    customer_id  text not null,
    currency     char(3) not null,  -- ledger.currencies, checked per statement below
    bill_cycle   text not null default 'MONTHLY',
    -- Service state as billing sees it: suspended by dunning, restored on payment.
    -- closed: billed no more, takes no payments, keeps its history.
    status       text not null default 'active'
                 check (status in ('active', 'suspended', 'closed')),
    -- Days after a bill's due date before dunning suspends the account.
    grace_days   integer not null default 14 check (grace_days >= 0),
    created_at   timestamptz not null default now(),
    created_by   text not null default current_user,
    -- Who last changed `status` and when.
    status_changed_at timestamptz,
    status_changed_by text,
    -- Minor units of the account's currency; null = no limit. Bounded like every amount.
    credit_limit    bigint check (credit_limit between 0 and 1000000000000000),
    -- The name of the dunning profile billing applies (docs/billing.md); 'standard' is
    -- the account's own grace_days and nothing more.
    dunning_profile text not null default 'standard'
                    check (dunning_profile ~ '^[a-z][a-z0-9_]{0,31}$'),
    updated_at      timestamptz,
    updated_by      text,
    constraint accounts_grace_days_bounded check (grace_days <= 3650)
);
create index accounts_customer on ledger.accounts (customer_id);
create index accounts_cycle on ledger.accounts (bill_cycle, id);

-- Billing accounts are closed, never deleted, and their id never changes: contracts refer
-- to them (customers checks a contract's account once per statement, customers/0005,
-- and that check holds only while what it saw stays), and so do bills and postings.
-- Currencies are never deleted either, which lets an account's currency be checked once
-- per statement too instead of by a foreign key per row (its query and lock were most of
-- what a bulk import of accounts cost beyond the table's own indexes).
create function ledger.kept_forever() returns trigger
language plpgsql as $$
begin
    raise exception 'ledger.% rows are never deleted nor their keys changed', tg_table_name
        using errcode = 'check_violation', constraint = tg_table_name || '_kept',
              table = tg_table_name, schema = tg_table_schema;
end
$$;

create trigger accounts_kept before delete on ledger.accounts
    for each statement execute function ledger.kept_forever();
create trigger accounts_kept_truncate before truncate on ledger.accounts
    for each statement execute function ledger.kept_forever();
create trigger accounts_key_kept before update of id on ledger.accounts
    for each row when (old.id is distinct from new.id)
    execute function ledger.kept_forever();
create trigger currencies_kept before delete on ledger.currencies
    for each statement execute function ledger.kept_forever();
create trigger currencies_kept_truncate before truncate on ledger.currencies
    for each statement execute function ledger.kept_forever();
create trigger currencies_key_kept before update of code on ledger.currencies
    for each row when (old.code is distinct from new.code)
    execute function ledger.kept_forever();

-- The accounts a statement wrote are in currencies the ledger knows; otherwise it fails
-- as the foreign key it replaces did, under that name.
create function ledger.accounts_in_known_currencies() returns trigger
language plpgsql as $$
declare
    v_missing text;
begin
    -- Each distinct currency once: a chunk of an import holds one or two.
    select w.currency into v_missing
    from (select distinct currency from written) w
    where not exists (select 1 from ledger.currencies c where c.code = w.currency)
    limit 1;
    if found then
        raise exception 'an account is in currency % that the ledger does not know', v_missing
            using errcode = 'foreign_key_violation', constraint = 'accounts_currency_fkey',
                  table = 'accounts', schema = 'ledger';
    end if;
    return null;
end
$$;

create trigger accounts_currency_on_insert
    after insert on ledger.accounts referencing new table as written
    for each statement execute function ledger.accounts_in_known_currencies();
create trigger accounts_currency_on_update
    after update on ledger.accounts referencing new table as written
    for each statement execute function ledger.accounts_in_known_currencies();

-- The books an amount can sit in. Customer books are per account; operator books
-- (cash, revenue) are kept per account too, so every posting is attributable.
--   prepaid     what the customer paid in advance (a liability: credit balance)
--   receivable  what the customer owes (bills issued and not yet paid: debit balance)
--   cash        money received
--   revenue     charges billed
-- published: ledger.book
create type ledger.book as enum ('prepaid', 'receivable', 'cash', 'revenue');

create table ledger.transactions (
    id               bigint generated always as identity primary key,
    account_id       text not null references ledger.accounts (id),
    kind             text not null check (kind in ('deposit', 'bill', 'bill_from_prepaid',
                                                   'writeoff', 'adjustment')),
    amount           bigint not null check (amount > 0),
    idempotency_key  text unique,
    reference        text,      -- a bill id, a staged item id, a bill run
    created_at       timestamptz not null default now(),
    created_by       text not null
);
create index transactions_account on ledger.transactions (account_id, id);

-- Double entry: positive is a debit, negative a credit.
create table ledger.postings (
    id              bigint generated always as identity primary key,
    transaction_id  bigint not null references ledger.transactions (id),
    account_id      text not null,
    book            ledger.book not null,
    amount          bigint not null check (amount <> 0)
);
create index postings_transaction on ledger.postings (transaction_id);
create index postings_account on ledger.postings (account_id, book);

-- Current balance per account and book, maintained in the same transaction as the
-- postings (ledger.post); `bossa ledger check` proves it equals the postings' sum.
create table ledger.balances (
    account_id  text not null references ledger.accounts (id),
    book        ledger.book not null,
    amount      bigint not null default 0,
    primary key (account_id, book)
) with (fillfactor = 80);

create table ledger.bills (
    id           bigint generated always as identity primary key,
    account_id   text not null references ledger.accounts (id),
    bill_run_id  bigint,
    period_start date not null,
    period_end   date not null,
    recurring    bigint not null check (recurring >= 0),
    usage        bigint not null check (usage >= 0),
    amount       bigint not null check (amount >= 0),
    paid_from_prepaid bigint not null default 0,
    due_date     date not null,
    created_at   timestamptz not null default now(),
    unique (bill_run_id, account_id)
);
create index bills_account on ledger.bills (account_id, due_date);

-- Usage charges, rated by the rating pipeline (S); billed once by the bill run.
create table ledger.rated_usage (
    id          bigint generated always as identity primary key,
    -- ledger.accounts: checked once per statement (usage_refers_to_accounts, below).
    account_id  text not null,
    used_at     timestamptz not null,
    charge      bigint not null check (charge >= 0),
    description text,
    bill_id     bigint
);
create index rated_usage_unbilled on ledger.rated_usage (account_id, used_at) where bill_id is null;

-- Rated usage's account, checked once per statement over the rows it wrote rather than by
-- a foreign key's query and lock per row (accounts are never deleted nor renamed: an
-- account seen once stays good). A missing one fails as the foreign key did, by its name.
create function ledger.usage_refers_to_accounts() returns trigger
language plpgsql as $$
declare
    v_missing text;
begin
    -- No LIMIT nor DISTINCT: either makes the planner probe the index once per row
    -- (86k rows: 110-380 ms); as an aggregate it takes a hash anti-join for a batch
    -- (45 ms) and still probes for a few rows. The smallest missing account is named.
    select min(w.account_id) into v_missing
    from written w
    where not exists (select 1 from ledger.accounts a where a.id = w.account_id);
    if v_missing is not null then
        raise exception 'rated usage refers to account % that does not exist', v_missing
            using errcode = 'foreign_key_violation', constraint = 'rated_usage_account_id_fkey',
                  table = 'rated_usage', schema = 'ledger';
    end if;
    return null;
end
$$;

create trigger rated_usage_account_on_insert
    after insert on ledger.rated_usage referencing new table as written
    for each statement execute function ledger.usage_refers_to_accounts();
-- An update that moves a row to another account (none of bossa's does: billing sets
-- bill_id alone, so this trigger never fires for it) is checked row by row.
create function ledger.moved_usage_refers_to_account() returns trigger
language plpgsql as $$
begin
    if not exists (select 1 from ledger.accounts a where a.id = new.account_id) then
        raise exception 'rated usage refers to account % that does not exist', new.account_id
            using errcode = 'foreign_key_violation', constraint = 'rated_usage_account_id_fkey',
                  table = 'rated_usage', schema = 'ledger';
    end if;
    return new;
end
$$;

create trigger rated_usage_account_on_update
    before update of account_id on ledger.rated_usage
    for each row when (old.account_id is distinct from new.account_id)
    execute function ledger.moved_usage_refers_to_account();

-- published: ledger.post
-- Post one transaction: its postings must sum to zero; balances move with them.
create function ledger.post(
    p_account text, p_kind text, p_amount bigint, p_books ledger.book[], p_amounts bigint[],
    p_key text, p_reference text, p_actor text
) returns bigint
language plpgsql as $$
declare
    v_id bigint;
begin
    if (select coalesce(sum(a), 0) from unnest(p_amounts) a) <> 0 then
        raise exception 'postings of a % transaction must sum to zero', p_kind
            using errcode = 'check_violation';
    end if;
    insert into ledger.transactions (account_id, kind, amount, idempotency_key, reference, created_by)
    values (p_account, p_kind, p_amount, p_key, p_reference, p_actor)
    returning id into v_id;
    insert into ledger.postings (transaction_id, account_id, book, amount)
    select v_id, p_account, b, a from unnest(p_books, p_amounts) as u(b, a) where a <> 0;
    insert into ledger.balances as bal (account_id, book, amount)
    select p_account, b, sum(a) from unnest(p_books, p_amounts) as u(b, a) group by b
    on conflict (account_id, book) do update set amount = bal.amount + excluded.amount;
    return v_id;
end
$$;

-- published: ledger.billing_accounts
-- The accounts as other modules read them (billing's runs and dunning, import).
create view ledger.billing_accounts as
select id, customer_id, currency, bill_cycle, status, grace_days, created_at, created_by,
       credit_limit, dunning_profile
from ledger.accounts;

-- published: ledger.book_balances
-- Each account's current balance per book.
create view ledger.book_balances as
select account_id, book, amount from ledger.balances;

-- published: ledger.posted_transactions
-- Every transaction posted, with its reference (a bill, a staged item, a payment).
create view ledger.posted_transactions as
select id, account_id, kind, amount, idempotency_key, reference, created_at, created_by
from ledger.transactions;

-- published: ledger.transaction_postings
-- The postings of every transaction (positive = debit).
create view ledger.transaction_postings as
select id, transaction_id, account_id, book, amount from ledger.postings;

-- published: ledger.issued_bills
-- Every bill issued, by bill run.
create view ledger.issued_bills as
select id, account_id, bill_run_id, period_start, period_end, recurring, usage, amount,
       paid_from_prepaid, due_date, created_at
from ledger.bills;

-- published: ledger.issue_bill
-- Issue an account's bill for a period: the recurring charges the caller computed, plus
-- the account's usage rated before the period's end and not yet billed, posted as a
-- bill and paid from prepaid funds where there are some. Returns the bill's id. The
-- unique (bill_run_id, account_id) refuses a second bill of the same run.
create function ledger.issue_bill(
    p_account text, p_run bigint, p_period_start date, p_period_end date, p_due_date date,
    p_recurring bigint, p_actor text
) returns bigint
language plpgsql as $$
declare
    v_usage bigint;
    v_usage_ids bigint[];
    v_amount bigint;
    v_prepaid bigint;
    v_from_prepaid bigint;
    v_bill bigint;
begin
    -- Claim the period's unbilled usage first (bill_id 0 marks it within this
    -- transaction), so usage rated concurrently is billed next time, not lost.
    with claimed as (
        update ledger.rated_usage set bill_id = 0
        where account_id = p_account and bill_id is null
          and used_at < (p_period_end + 1)::timestamptz
        returning id, charge
    )
    select coalesce(sum(charge), 0), array_agg(id) into v_usage, v_usage_ids from claimed;
    v_amount := p_recurring + v_usage;
    insert into ledger.bills (account_id, bill_run_id, period_start, period_end,
                              recurring, usage, amount, due_date)
    values (p_account, p_run, p_period_start, p_period_end, p_recurring, v_usage,
            v_amount, p_due_date)
    returning id into v_bill;
    if v_usage_ids is not null then
        -- By primary key: no index covers bill_id = 0 (bench/billing found the scan).
        update ledger.rated_usage set bill_id = v_bill where id = any (v_usage_ids);
    end if;
    if v_amount > 0 then
        -- A bill: receivable +a, revenue -a.
        perform ledger.post(p_account, 'bill', v_amount,
                            array['receivable', 'revenue']::ledger.book[],
                            array[v_amount, -v_amount], null, 'bill:' || v_bill, p_actor);
        select coalesce(-amount, 0) into v_prepaid from ledger.balances
        where account_id = p_account and book = 'prepaid';
        v_from_prepaid := least(greatest(coalesce(v_prepaid, 0), 0), v_amount);
        if v_from_prepaid > 0 then
            -- Paid from prepaid funds: prepaid +a, receivable -a.
            perform ledger.post(p_account, 'bill_from_prepaid', v_from_prepaid,
                                array['prepaid', 'receivable']::ledger.book[],
                                array[v_from_prepaid, -v_from_prepaid], null,
                                'bill:' || v_bill, p_actor);
            update ledger.bills set paid_from_prepaid = v_from_prepaid where id = v_bill;
        end if;
    end if;
    return v_bill;
end
$$;

-- Bulk import (bossa.imports) reads and writes billing accounts only through what follows.

-- published: ledger.account_rows
-- Every billing account, in the columns of an accounts file (import checks account ids
-- and a contract's account's customer against it, export writes it).
create view ledger.account_rows as
select id, customer_id, currency, bill_cycle, credit_limit, dunning_profile, grace_days, status
from ledger.accounts;

-- published: ledger.currency_codes
-- The currencies an account may be kept in.
create view ledger.currency_codes as
select code from ledger.currencies;

-- published: ledger.import_accounts
-- Open checked accounts; a missing bill cycle is MONTHLY, dunning profile standard, grace
-- 14 days, status active (another status records who set it and when). Returns the rows
-- inserted.
create function ledger.import_accounts(
    p_id text[], p_customer_id text[], p_currency text[], p_bill_cycle text[],
    p_credit_limit bigint[], p_dunning_profile text[], p_grace_days bigint[], p_status text[],
    p_actor text
) returns bigint
language sql as $$
    with inserted as (
        insert into ledger.accounts (
            id, customer_id, currency, bill_cycle, credit_limit, dunning_profile, grace_days,
            status, status_changed_at, status_changed_by, created_by
        )
        select id, customer_id, currency, coalesce(bill_cycle, 'MONTHLY'), credit_limit,
               coalesce(dunning_profile, 'standard'), coalesce(grace_days, 14)::integer,
               coalesce(status, 'active'),
               case when coalesce(status, 'active') <> 'active' then now() end,
               case when coalesce(status, 'active') <> 'active' then p_actor end,
               p_actor
        from unnest(p_id, p_customer_id, p_currency, p_bill_cycle, p_credit_limit,
                    p_dunning_profile, p_grace_days, p_status)
             as u(id, customer_id, currency, bill_cycle, credit_limit, dunning_profile,
                  grace_days, status)
        returning 1
    )
    select count(*) from inserted
$$;

-- published: ledger.issue_bills
-- Issue the bills of many accounts for one period at once, set-based (a bill run's
-- chunk): per account the recurring charges the caller computed (p_recurring, in the
-- order of p_accounts) plus its usage rated before the period's end and not yet billed,
-- posted as a bill and paid from prepaid funds where there are some; the same writes as
-- ledger.issue_bill for each account, in a few statements instead of a dozen per
-- account. Every transaction's postings are a pair (+a, -a), so each sums to zero by
-- construction, and balances move in the same statement. Returns the bills issued. The
-- unique (bill_run_id, account_id) refuses a second bill of the same run.
create function ledger.issue_bills(
    p_run bigint, p_period_start date, p_period_end date, p_due_date date,
    p_accounts text[], p_recurring bigint[], p_actor text
) returns integer
language plpgsql as $$
declare
    v_usage_ids bigint[];
    v_usage_accounts text[];
    v_usage_charges bigint[];
    v_bills integer;
begin
    if cardinality(p_accounts) is distinct from cardinality(p_recurring) then
        raise exception 'issue_bills: % accounts but % recurring amounts',
            cardinality(p_accounts), cardinality(p_recurring)
            using errcode = 'invalid_parameter_value';
    end if;
    -- The period's unbilled usage of these accounts, locked: usage rated concurrently
    -- and committed after this statement is billed next time, not lost.
    -- Read once, here: the sums and the marking below use these arrays (looking the
    -- ids up again per bill was a nested loop over both: bench/billing).
    select array_agg(id), array_agg(account_id), array_agg(charge)
    into v_usage_ids, v_usage_accounts, v_usage_charges
    from (
        select id, account_id, charge from ledger.rated_usage
        where account_id = any (p_accounts) and bill_id is null
          and used_at < (p_period_end + 1)::timestamptz
        for update
    ) u;
    with chunk as (
        select account_id, recurring from unnest(p_accounts, p_recurring) as c(account_id, recurring)
    ),
    usage as (
        select account_id, sum(charge) as usage
        from unnest(v_usage_accounts, v_usage_charges) as u(account_id, charge)
        group by account_id
    ),
    computed as (
        select c.account_id, c.recurring, coalesce(u.usage, 0) as usage,
               c.recurring + coalesce(u.usage, 0) as amount,
               least(greatest(coalesce(-p.amount, 0), 0), c.recurring + coalesce(u.usage, 0))
                   as from_prepaid
        from chunk c
        left join usage u on u.account_id = c.account_id
        left join ledger.balances p on p.account_id = c.account_id and p.book = 'prepaid'
    ),
    bills as (
        insert into ledger.bills (account_id, bill_run_id, period_start, period_end,
                                  recurring, usage, amount, paid_from_prepaid, due_date)
        select account_id, p_run, p_period_start, p_period_end, recurring, usage, amount,
               from_prepaid, p_due_date
        from computed
        returning id, account_id, amount, paid_from_prepaid
    ),
    marked as (
        update ledger.rated_usage r set bill_id = b.id
        from unnest(v_usage_ids, v_usage_accounts) as u(id, account_id)
        join bills b on b.account_id = u.account_id
        where r.id = u.id
    ),
    moves as (
        -- A bill: receivable +a, revenue -a. Paid from prepaid funds: prepaid +x,
        -- receivable -x.
        select b.id as bill_id, b.account_id, 'bill' as kind, b.amount,
               'receivable'::ledger.book as debit, 'revenue'::ledger.book as credit
        from bills b where b.amount > 0
        union all
        select b.id, b.account_id, 'bill_from_prepaid', b.paid_from_prepaid,
               'prepaid'::ledger.book, 'receivable'::ledger.book
        from bills b where b.paid_from_prepaid > 0
    ),
    tx as (
        insert into ledger.transactions (account_id, kind, amount, reference, created_by)
        select account_id, kind, amount, 'bill:' || bill_id, p_actor from moves
        returning id, account_id, kind, amount, reference
    ),
    legs as (
        select tx.id, tx.account_id, l.book, l.amount
        from tx
        join moves m on 'bill:' || m.bill_id = tx.reference and m.kind = tx.kind
        cross join lateral (values (m.debit, tx.amount), (m.credit, -tx.amount)) as l(book, amount)
    ),
    posted as (
        insert into ledger.postings (transaction_id, account_id, book, amount)
        select id, account_id, book, amount from legs
    ),
    moved as (
        insert into ledger.balances as bal (account_id, book, amount)
        select account_id, book, sum(amount) from legs group by account_id, book
        on conflict (account_id, book) do update set amount = bal.amount + excluded.amount
    )
    select count(*) into v_bills from bills;
    return v_bills;
end
$$;

-- published: ledger.add_usage
-- Rated usage from the rating pipeline: one row per account, day and rating batch (the
-- batch's records stay with rating, by record key, and trace back through `p_reference`).
-- Returns the rows added. An unknown account is refused (the foreign key), so rating
-- learns of it instead of charging nobody.
create function ledger.add_usage(
    p_accounts text[], p_used_at timestamptz[], p_charges bigint[], p_reference text
) returns integer
language sql as $$
    with added as (
        insert into ledger.rated_usage (account_id, used_at, charge, description)
        select a, u, c, p_reference
        from unnest(p_accounts, p_used_at, p_charges) as x(a, u, c)
        returning 1
    )
    select count(*)::integer from added
$$;

-- published: ledger.remove_usage
-- Remove the unbilled usage rows of these (account, reference) pairs whose day is in
-- [p_from, p_to): rating rerates those days and books them again in the same
-- transaction. A billed row is never removed: if any row in scope is billed the call
-- fails (raises) and nothing is removed, since its bill is issued. Returns the rows removed.
create function ledger.remove_usage(
    p_accounts text[], p_references text[], p_from timestamptz, p_to timestamptz
) returns integer
language plpgsql as $$
declare
    v_removed integer;
begin
    if exists (
        select 1 from ledger.rated_usage r
        join unnest(p_accounts, p_references) as k(account_id, reference)
          on r.account_id = k.account_id and r.description = k.reference
        where r.used_at >= p_from and r.used_at < p_to and r.bill_id is not null
    ) then
        raise exception 'usage in scope is billed already' using errcode = 'P0001';
    end if;
    with removed as (
        delete from ledger.rated_usage r
        using unnest(p_accounts, p_references) as k(account_id, reference)
        where r.account_id = k.account_id and r.description = k.reference
          and r.used_at >= p_from and r.used_at < p_to and r.bill_id is null
        returning 1
    )
    select count(*)::integer into v_removed from removed;
    return v_removed;
end
$$;

-- published: ledger.usage_lines
-- Rated usage with the bill that charged it (null until billed), for tracing a bill line
-- back to the rating batch whose records it sums.
create view ledger.usage_lines as
select id, account_id, used_at, charge, description as reference, bill_id
from ledger.rated_usage;
