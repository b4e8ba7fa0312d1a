-- Sync (issue 14): the publisher's and the listeners' controls, the account router, and
-- the pipeline's memory that the listener's modules keep.

-- S4: whether the publisher enqueues on the lanes (one row). Disconnected, the business
-- transaction writes its events to sync.outbox instead; connect moves them to their lanes
-- in order. Publishers and the switch meet on an advisory lock, not on this row.
create table sync.publisher (
    id boolean primary key default true check (id),
    connected boolean not null default true,
    changed_by text not null default 'bossa',
    changed_at timestamptz not null default now()
);
insert into sync.publisher default values;

create table sync.outbox (
    id bigint generated always as identity primary key,
    lane text not null,
    key text,
    kind text not null,
    payload jsonb not null,
    created_at timestamptz not null default now()
);

-- S9, S11: each pipeline instance's listener: the operator's wish (connected) and what
-- the running listener reports (state).
create table sync.listeners (
    instance integer primary key check (instance between 0 and 7),
    connected boolean not null default true,
    state text not null default 'stopped'
        check (state in ('stopped', 'starting', 'active', 'disconnected')),
    changed_by text not null default 'bossa',
    changed_at timestamptz not null default now(),
    seen_at timestamptz
);

-- Who switched what, when (publisher and listeners).
create table sync.control_log (
    id bigint generated always as identity primary key,
    target text not null check (target in ('publisher', 'listener')),
    instance integer,
    action text not null check (action in ('disconnect', 'connect')),
    actor text not null,
    reason text,
    moved integer not null default 0,
    at timestamptz not null default now()
);

-- S12: the account router's assignments of customers to pipeline instances; a customer
-- not listed goes to the instance its id hashes to.
create table sync.account_routes (
    customer_id text primary key,
    instance integer not null check (instance between 0 and 7),
    created_by text not null,
    created_at timestamptz not null default now()
);

-- S6: what the listener's modules keep of accounts (account data: announced, closed;
-- balance data: the ledger's balances when the event was applied; discount data).
-- S10: an announced account has no details here until rating loads them on first usage.
create table sync.pipeline_accounts (
    instance integer not null,
    account_id text not null,
    customer_id text,
    status text not null,
    balances jsonb not null default '{}',
    discounts jsonb not null default '{}',
    last_entry bigint not null,
    updated_at timestamptz not null default now(),
    primary key (instance, account_id)
);

-- The billing module: the cycles a bill run is billing now (S14 reads this).
create table sync.billing_cycles (
    instance integer not null,
    cycle text not null,
    run_id bigint,
    started_at timestamptz,
    completed_at timestamptz,
    last_entry bigint not null,
    primary key (instance, cycle)
);

-- The recycle module: recycle requests as processed, each once (its journal entry).
create table sync.recycle_requests (
    entry_id bigint primary key,
    instance integer not null,
    requested_by text,
    reason text,
    processed_at timestamptz not null default now()
);

select journal.declare_lane('sync.pipeline.' || n, 'sync') from generate_series(1, 7) n;
