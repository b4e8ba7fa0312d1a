-- Issue 12: arrears are the past-due amount everywhere (queries only); the contracts a
-- payment restored are recorded with when their restore was sent (billing.restores);
-- a run's progress is read from one row per committed chunk (billing.run_chunks),
-- written by billing.bill_chunk in the chunk's transaction.
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

-- Runs billed before this migration: their progress so far as one chunk.
insert into billing.run_chunks (run_id, started_at, finished_at, billed)
select r.id, r.started_at, coalesce(r.billed_at, now()), count(*)
from billing.runs r join billing.run_accounts ra on ra.run_id = r.id and ra.billed
group by r.id, r.started_at, r.billed_at;

drop function billing.bill_chunk(bigint, integer, text);

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
