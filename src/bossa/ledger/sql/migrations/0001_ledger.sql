-- The ledger: billing accounts, double-entry postings in integer minor units, balances
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
    customer_id  text not null references customers.customers (id),
    currency     char(3) not null references ledger.currencies (code),
    bill_cycle   text not null default 'MONTHLY',
    -- Service state as billing sees it: suspended by dunning, restored on payment.
    status       text not null default 'active' check (status in ('active', 'suspended')),
    -- Days after a bill's due date before dunning suspends the account.
    grace_days   integer not null default 14 check (grace_days >= 0),
    created_at   timestamptz not null default now(),
    created_by   text not null default current_user
);
create index accounts_customer on ledger.accounts (customer_id);
create index accounts_cycle on ledger.accounts (bill_cycle, id);

-- The books an amount can sit in. Customer books are per account; operator books
-- (cash, revenue) are kept per account too, so every posting is attributable.
--   prepaid     what the customer paid in advance (a liability: credit balance)
--   receivable  what the customer owes (bills issued and not yet paid: debit balance)
--   cash        money received
--   revenue     charges billed
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
    account_id  text not null references ledger.accounts (id),
    used_at     timestamptz not null,
    charge      bigint not null check (charge >= 0),
    description text,
    bill_id     bigint
);
create index rated_usage_unbilled on ledger.rated_usage (account_id, used_at) where bill_id is null;

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
