-- The whole current schema of billing; migrations/ are the steps that build it.
-- windows, runs with their snapshot and per-account progress, and the staging stores
-- for deposits and write-offs taken while a run holds the books.
create schema billing;

-- B1: planned bill-run windows (typically 4-12 hours).
create table billing.windows (
    id             bigint generated always as identity primary key,
    bill_cycle     text not null,
    planned_start  timestamptz not null,
    planned_end    timestamptz not null check (planned_end > planned_start),
    created_at     timestamptz not null default now(),
    created_by     text not null default current_user
);

-- A run's real state: running (billing accounts; payments are staged), settling
-- (applying what was staged; payments still staged), settled (normal processing), or
-- cancelled (before any account was billed; what it staged was settled).
create table billing.runs (
    id                bigint generated always as identity primary key,
    bill_cycle        text not null,
    period_start      date not null,
    period_end        date not null check (period_end >= period_start),
    due_days          integer not null default 20,
    status            text not null,
    planned_end       timestamptz,
    accounts_total    integer not null default 0,
    started_at        timestamptz not null default now(),
    billed_at         timestamptz,
    settled_at        timestamptz,
    -- The last ledger transaction when staging ended: later ones are online activity.
    settled_through   bigint,
    started_by        text not null,
    cancelled_at      timestamptz,
    cancelled_by      text,
    constraint runs_status_check
        check (status in ('running', 'settling', 'settled', 'cancelled'))
);
-- A period is billed once per cycle; a cancelled run leaves it to the next.
create unique index runs_one_period on billing.runs (bill_cycle, period_start)
    where cancelled_at is null;
-- At most one run holds the books at a time.
create unique index runs_one_open on billing.runs ((true)) where status in ('running', 'settling');

-- The accounts a run bills, each exactly once.
create table billing.run_accounts (
    run_id      bigint not null references billing.runs (id),
    account_id  text not null,
    billed      boolean not null default false,
    primary key (run_id, account_id)
) with (fillfactor = 70);
create index run_accounts_pending on billing.run_accounts (run_id, account_id) where not billed;

-- B6: every account's balances at the run's start.
create table billing.snapshots (
    run_id      bigint not null references billing.runs (id),
    account_id  text not null,
    book        ledger.book not null,
    amount      bigint not null,
    primary key (run_id, account_id, book)
);

-- B2: deposits taken during a run, answered at once, applied by settlement (B4).
create table billing.staged_deposits (
    id               bigint generated always as identity primary key,
    run_id           bigint not null references billing.runs (id),
    -- A ledger account; checked by the ledger's service as the payment is taken (no
    -- foreign key: modules meet through published relations, not each other's tables).
    account_id       text not null,
    amount           bigint not null check (amount > 0),
    idempotency_key  text unique,
    received_at      timestamptz not null default now(),
    received_by      text not null,
    settled_at       timestamptz,
    transaction_id   bigint
);
create index staged_deposits_unsettled on billing.staged_deposits (id) where settled_at is null;
create index staged_deposits_account on billing.staged_deposits (account_id)
    where settled_at is null;

-- B2: write-off (arrears payment) instructions taken during a run.
create table billing.staged_writeoffs (
    id               bigint generated always as identity primary key,
    run_id           bigint not null references billing.runs (id),
    -- A ledger account; checked by the ledger's service as the payment is taken (no
    -- foreign key: modules meet through published relations, not each other's tables).
    account_id       text not null,
    amount           bigint not null check (amount > 0),
    idempotency_key  text unique,
    received_at      timestamptz not null default now(),
    received_by      text not null,
    settled_at       timestamptz,
    transaction_id   bigint
);
create index staged_writeoffs_unsettled on billing.staged_writeoffs (id) where settled_at is null;
create index staged_writeoffs_account on billing.staged_writeoffs (account_id)
    where settled_at is null;

-- Payments as the front office sees them (staged or posted), for idempotent replays.
create table billing.payments (
    idempotency_key  text primary key,
    request_hash     text not null,
    account_id       text not null,
    kind             text not null check (kind in ('deposit', 'arrears')),
    amount           bigint not null,
    outcome          jsonb not null,
    created_at       timestamptz not null default now()
);

-- A run's progress: one row per committed chunk (in the chunk's own transaction), so
-- the accounts billed, the rate and the time left are read from a few rows instead of
-- counting the run's accounts (docs/billing.md, "Progress").
create table billing.run_chunks (
    run_id       bigint not null references billing.runs (id),
    started_at   timestamptz not null,
    finished_at  timestamptz not null,
    billed       integer not null check (billed > 0)
);
create index run_chunks_run on billing.run_chunks (run_id, finished_at);

-- B3: each contract restored by an arrears payment, with when its restore order was
-- queued (with the payment, in its transaction) and when the service lane sent it to
-- provisioning. `payment` is the payment's idempotency key: the key of its write-off,
-- staged (billing.staged_writeoffs) or posted (ledger transaction 'payment:<key>').
create table billing.restores (
    payment     text not null,
    sa_id       text not null,
    account_id  text not null,
    queued_at   timestamptz not null default now(),
    sent_at     timestamptz,
    primary key (payment, sa_id)
);
create index restores_account on billing.restores (account_id, queued_at);

-- Bill up to p_limit of a run's pending accounts in this transaction: the recurring
-- charges of the customer's contracts (customers.contract_fees) and the ledger's half,
-- usage, the bill and its postings (ledger.issue_bill). Accounts are claimed with SKIP
-- LOCKED, so parallel workers share a run, and a worker killed mid-chunk leaves its
-- accounts pending: each account is billed exactly once. The run's row is held in share
-- mode, so a cancellation waits out the chunks under way and none bills after it. The
-- chunk is recorded (billing.run_chunks) in the same transaction: the run's progress.
create function billing.bill_chunk(p_run bigint, p_limit integer, p_actor text)
returns integer
language plpgsql as $$
declare
    v_run billing.runs;
    r record;
    v_recurring bigint;
    v_done integer := 0;
    v_started timestamptz := clock_timestamp();
begin
    -- Share mode: chunks run side by side; a cancellation (for update) waits for them.
    select * into v_run from billing.runs where id = p_run for share;
    if v_run.status is distinct from 'running' then
        return 0;
    end if;
    for r in
        select ra.account_id, a.customer_id, a.currency
        from billing.run_accounts ra
        join ledger.billing_accounts a on a.id = ra.account_id
        where ra.run_id = p_run and not ra.billed
        order by ra.account_id
        limit p_limit
        for update of ra skip locked
    loop
        select coalesce(sum(f.monthly_fee), 0) into v_recurring
        from customers.contract_fees f
        where f.customer_id = r.customer_id and f.status <> 'terminated'
          and f.currency = r.currency;
        perform ledger.issue_bill(r.account_id, p_run, v_run.period_start, v_run.period_end,
                                  v_run.period_end + v_run.due_days, v_recurring, p_actor);
        update billing.run_accounts set billed = true
        where run_id = p_run and account_id = r.account_id;
        v_done := v_done + 1;
    end loop;
    if v_done > 0 then
        insert into billing.run_chunks (run_id, started_at, finished_at, billed)
        values (p_run, v_started, clock_timestamp(), v_done);
    end if;
    return v_done;
end
$$;

-- B4: apply up to p_limit staged items taken up to p_cutoff, deposits and write-offs in
-- the order they were taken, in this one transaction (one round trip, one commit per
-- batch). Each item is locked and marked as it is posted: a settler killed mid-batch
-- applied none of its batch, and the ledger's idempotency keys forbid applying twice.
create function billing.settle_batch(p_cutoff timestamptz, p_limit integer, p_actor text)
returns integer
language plpgsql as $$
declare
    r record;
    v_tx bigint;
    v_done integer := 0;
begin
    for r in
        select s.kind, s.id, s.account_id, s.amount
        from (
            select 'deposit' as kind, id, account_id, amount, received_at
            from billing.staged_deposits
            where settled_at is null and received_at <= p_cutoff
            union all
            select 'writeoff', id, account_id, amount, received_at
            from billing.staged_writeoffs
            where settled_at is null and received_at <= p_cutoff
        ) s
        order by s.received_at, s.kind, s.id
        limit p_limit
    loop
        if r.kind = 'deposit' then
            perform 1 from billing.staged_deposits
            where id = r.id and settled_at is null for update skip locked;
            continue when not found;  -- another settler has it
            v_tx := ledger.post(r.account_id, 'deposit', r.amount,
                                array['cash', 'prepaid']::ledger.book[],
                                array[r.amount, -r.amount],
                                'staged-deposit:' || r.id, 'staged-deposit:' || r.id, p_actor);
            update billing.staged_deposits set settled_at = now(), transaction_id = v_tx
            where id = r.id;
        else
            perform 1 from billing.staged_writeoffs
            where id = r.id and settled_at is null for update skip locked;
            continue when not found;
            v_tx := ledger.post(r.account_id, 'writeoff', r.amount,
                                array['cash', 'receivable']::ledger.book[],
                                array[r.amount, -r.amount],
                                'staged-writeoff:' || r.id, 'staged-writeoff:' || r.id, p_actor);
            update billing.staged_writeoffs set settled_at = now(), transaction_id = v_tx
            where id = r.id;
        end if;
        v_done := v_done + 1;
    end loop;
    return v_done;
end
$$;

-- The service lane (suspend and restore orders for provisioning) is billing's own.
select journal.declare_lane('billing.service', 'billing');
