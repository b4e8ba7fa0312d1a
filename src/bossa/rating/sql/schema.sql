-- The whole current schema of rating; migrations/ are the steps that build it.
create schema rating;

-- A version of a product's usage tariff (bossa.rating.models.TariffVersion). The product
-- is checked through customers' service (no foreign key across modules). Versions of one
-- product never overlap: the service closes the open one when a new one starts.
create table rating.tariffs (
    id                bigint generated always as identity primary key,
    product_code      text not null,
    valid_from        date not null,
    valid_to          date check (valid_to > valid_from),
    increment_s       integer not null default 1 check (increment_s in (1, 60)),
    min_charge        bigint not null default 0 check (min_charge between 0 and 1000000000000),
    discount_percent  integer not null default 0 check (discount_percent between 0 and 100),
    allowance_seconds bigint not null default 0 check (allowance_seconds between 0 and 1000000000),
    created_at        timestamptz not null default now(),
    created_by        text not null,
    unique (product_code, valid_from)
);

create table rating.tariff_zones (
    tariff_id  bigint not null references rating.tariffs (id),
    prefix     text not null check (prefix ~ '^[0-9]{1,16}$'),
    zone       text not null check (zone ~ '^[a-z][a-z0-9_]{0,31}$'),
    included   boolean not null default false,
    primary key (tariff_id, prefix)
);

create table rating.tariff_rates (
    tariff_id  bigint not null references rating.tariffs (id),
    zone       text not null,
    band       text not null check (band in ('peak', 'offpeak', 'weekend')),
    rate       bigint not null check (rate between 0 and 10000000),
    primary key (tariff_id, zone, band)
);

-- The pipeline's account data (S10): which account and product a number had when. Kept
-- by the sync listener from business events; read into pipeline memory on first usage.
create table rating.subscriptions (
    msisdn        text not null check (msisdn ~ '^[0-9]{1,15}$'),
    valid_from    timestamp not null,
    valid_to      timestamp check (valid_to > valid_from),
    account_id    text not null,
    product_code  text not null,
    primary key (msisdn, valid_from)
);

-- One batch of usage records: a file from the inbox or a request. A file is rated once:
-- the same content dropped again finds its batch by checksum.
create table rating.batches (
    id          bigint generated always as identity primary key,
    source      text not null,
    sha256      text not null unique,
    records     integer not null default 0,
    rated       integer not null default 0,
    suspended   integer not null default 0,
    malformed   integer not null default 0,
    created_at  timestamptz not null default now(),
    created_by  text not null
);

-- Rated usage: one row per usage record, by its record key, so the same record ingested
-- twice is charged once and a bill line traces back to its records.
create table rating.rated_usage (
    record_key   text primary key,
    batch_id     bigint not null,  -- a batch of the same transaction (no foreign key: 0002)
    account_id   text not null,
    msisdn       text not null,
    destination  text not null,
    product_code text not null,
    zone         text not null,
    started_at   timestamp not null,
    duration     integer not null,
    billed       integer not null,
    free         integer not null,
    charge       bigint not null check (charge >= 0),
    -- billed seconds counted against the monthly allowance (rerating gives them back)
    allowance_used integer not null default 0
);
create index rated_usage_account on rating.rated_usage (account_id, started_at);
-- A batch's rows (taking them out of suspense): BRIN, as batch ids grow with the append
-- order, so COPY keeps no per-row btree entry for it; autosummarize keeps new ranges cheap.
create index rated_usage_batch on rating.rated_usage using brin (batch_id)
    with (pages_per_range = 32, autosummarize = on);

-- Usage records that could not be rated, with the reason; recycled on request or when
-- the cause is fixed (a recycled record leaves suspense when it rates).
create table rating.suspense (
    record_key   text primary key,
    batch_id     bigint not null,  -- a batch of the same transaction (no foreign key: 0002)
    msisdn       text not null,
    destination  text not null,
    started_at   timestamp not null,
    duration     integer not null,
    reason       text not null,
    suspended_at timestamptz not null default now(),
    attempts     integer not null default 1,
    -- the account when it was suspended (null when unknown)
    account_id   text
);
create index suspense_reason on rating.suspense (reason);
create index suspense_account on rating.suspense (account_id);
-- The records a batch suspended.
create index suspense_batch on rating.suspense (batch_id);

-- Allowance seconds used per account and calendar month ('YYYY-MM'), written in the
-- transaction of the usage that used them. Room on each page: every batch updates most
-- counters it rated, and an update that stays on its page adds no index entry (0004).
create table rating.allowance_usage (
    account_id  text not null,
    month       text not null check (month ~ '^[0-9]{4}-[0-9]{2}$'),
    seconds     bigint not null check (seconds >= 0),
    primary key (account_id, month)
) with (fillfactor = 60);

-- published: rating.usage_charges
-- Rated usage per account and day, for the bill run: what usage to charge in a period.
create view rating.usage_charges as
select account_id, started_at::date as day, sum(charge)::bigint as charge, count(*) as records
from rating.rated_usage
group by account_id, started_at::date;

-- What changed in the pipeline's account data, in commit order: a number whose
-- subscriptions changed, or an account whose billing hold changed. A pipeline keeps
-- what it loaded and drops only what is named here (S10: loaded again on next usage).
-- Writers take the `bossa.rating.changes` advisory lock before their row, so sequence
-- order is commit order and a reader holding the lock misses nothing.
create table rating.changes (
    seq         bigint generated always as identity primary key,
    msisdn      text,
    account_id  text,
    changed_at  timestamptz not null default now(),
    check (msisdn is not null or account_id is not null)
);

-- S14: accounts being billed (billing started, not completed): their new usage waits in
-- suspense as `billing_in_progress` and is recycled when billing completes.
create table rating.billing_holds (
    account_id  text primary key,
    since       timestamptz not null default now(),
    run         text not null default ''
);

-- Per pipeline instance: the version of the allowance counters, moved by every writer of
-- rating.allowance_usage, so a pipeline knows when its memory of them is stale.
create table rating.pipeline_state (
    instance           integer primary key,
    allowance_version  bigint not null default 0
);

-- Operators' recycle and rerate runs: who, what, and what came of it.
create table rating.audit (
    id      bigint generated always as identity primary key,
    at      timestamptz not null default now(),
    actor   text not null,
    action  text not null check (action in ('recycle', 'rerate')),
    detail  jsonb not null
);
