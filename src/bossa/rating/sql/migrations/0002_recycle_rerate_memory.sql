-- Suspense recycling, rerating, the pipeline's memory kept current, billing holds (issue 14).

-- The account a suspended record belonged to when it was suspended (null when unknown):
-- recycling by account, and the records of an account being billed (S14).
alter table rating.suspense add column account_id text;
create index suspense_account on rating.suspense (account_id);

-- Rated usage and suspense keep their batch id without a foreign key: the id is the
-- batch row written in the same transaction, batches are never deleted, and the per-row
-- check cost 30-50% of the COPY of rated rows (bench/rating/copy_ab.py: 1.60 s -> 1.04 s
-- for 89,063 rows; 2.67 s -> 1.85 s for 178,275).
alter table rating.rated_usage drop constraint rated_usage_batch_id_fkey;
alter table rating.suspense drop constraint suspense_batch_id_fkey;

-- The billed seconds a rated record counted against its account's monthly allowance:
-- rerating gives them back before rating the record again.
alter table rating.rated_usage add column allowance_used integer not null default 0;

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
