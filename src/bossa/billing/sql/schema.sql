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

-- A price x days / days of its product period, in minor units, rounded half to even
-- (docs/billing.md, "Charges"); bossa.billing.models.prorate is the same rule in Python.
create function billing.prorate(p_price bigint, p_days integer, p_period_days integer)
returns bigint
language sql immutable strict parallel safe as $$
    select (p_price * p_days) / p_period_days
         + case
               when 2 * ((p_price * p_days) % p_period_days) > p_period_days then 1
               when 2 * ((p_price * p_days) % p_period_days) = p_period_days
                    and (p_price * p_days) / p_period_days % 2 = 1 then 1
               else 0
           end
$$;

-- The recurring charges and one-off fees a run's period carries for each of the given
-- accounts (those without any: 0), from the contracts billed to them
-- (customers.contract_terms) and their products' price versions in the account's
-- currency (customers.price_versions). The set-based form of
-- bossa.billing.models.charges, which tests compare it with: a contract's days are split
-- by price version and by the version's calendar product period; a piece is carried by
-- the bill whose period holds its anchor (the later of the product period's first day and
-- the contract's first day) and costs round_half_even(price x days / period days); a
-- one-off fee is carried by the bill whose period holds the contract's first day. A
-- terminated contract without an end date ends on the day it was terminated.
create function billing.period_charges(
    p_accounts text[], p_period_start date, p_period_end date
) returns table (account_id text, charges bigint)
language sql stable as $$
    with terms as (
        select t.account_id, t.product_code, t.start_date as cs,
               case when t.status = 'terminated'
                    then coalesce(t.end_date, t.status_changed_at::date, t.start_date)
                    else t.end_date end as ce
        from customers.contract_terms t
        where t.account_id = any (p_accounts)
    ),
    priced as (
        select t.account_id, t.cs, t.ce, v.kind, v.period, v.amount, v.valid_from, v.valid_to
        from terms t
        join ledger.billing_accounts a on a.id = t.account_id
        join customers.price_versions v
          on v.product_code = t.product_code and v.currency = a.currency
        where (t.ce is null or t.ce > t.cs)
          and v.valid_from < coalesce(t.ce, 'infinity'::date)
          and coalesce(v.valid_to, 'infinity'::date) > t.cs
    ),
    recurring as (
        select p.account_id,
               billing.prorate(p.amount,
                               least(g.period_end, hi) - greatest(g.period_start, lo),
                               g.period_end - g.period_start) as amount
        from priced p
        cross join lateral (
            select greatest(p.cs, p.valid_from) as lo,
                   least(coalesce(p.ce, 'infinity'::date),
                         coalesce(p.valid_to, 'infinity'::date)) as hi,
                   case p.period when 'monthly' then interval '1 month'
                                 when 'quarterly' then interval '3 months'
                                 else interval '1 year' end as step,
                   case p.period when 'monthly' then 'month'
                                 when 'quarterly' then 'quarter'
                                 else 'year' end as unit
        ) k
        cross join lateral (
            select s::date as period_start, (s + k.step)::date as period_end
            from generate_series(date_trunc(k.unit, p_period_start::timestamp),
                                 p_period_end::timestamp, k.step) as s
        ) g
        where p.kind = 'recurring'
          and greatest(g.period_start, k.lo) < least(g.period_end, k.hi)
          and greatest(g.period_start, p.cs) between p_period_start and p_period_end
    ),
    one_off as (
        select p.account_id, p.amount
        from priced p
        where p.kind = 'one_off' and p.valid_from <= p.cs
          and p.cs between p_period_start and p_period_end
    )
    select a.account_id, coalesce(sum(x.amount), 0)::bigint
    from unnest(p_accounts) as a(account_id)
    left join (select * from recurring union all select * from one_off) x
      on x.account_id = a.account_id
    group by a.account_id
$$;

-- Bill up to p_limit of a run's pending accounts in this transaction, set-based: the
-- accounts are claimed (SKIP LOCKED, so parallel workers share a run, and a worker
-- killed mid-chunk leaves its accounts pending: each account is billed exactly once),
-- their charges for the run's period computed (billing.period_charges) and their bills
-- issued with their usage by the ledger (ledger.issue_bills), in a few statements for
-- the whole chunk. The run's row is held in share mode, so a cancellation waits out the
-- chunks under way and none bills after it. The chunk is recorded (billing.run_chunks)
-- in the same transaction: the run's progress. It returns the accounts billed and the
-- fees it charged (one per account with a charge, as a JSON array), from which the
-- caller publishes each CycleFeeApplied business event before this transaction commits
-- (S1: the charge and its event commit together or not at all).
create function billing.bill_chunk(
    p_run bigint, p_limit integer, p_actor text, out billed integer, out fees jsonb
)
language plpgsql as $$
declare
    v_run billing.runs;
    v_started timestamptz := clock_timestamp();
    v_accounts text[];
    v_charges bigint[];
begin
    billed := 0;
    fees := '[]'::jsonb;
    -- Share mode: chunks run side by side; a cancellation (for update) waits for them.
    select * into v_run from billing.runs where id = p_run for share;
    if v_run.status is distinct from 'running' then
        return;
    end if;
    with claimed as (
        select ra.account_id from billing.run_accounts ra
        where ra.run_id = p_run and not ra.billed
        order by ra.account_id
        limit p_limit
        for update skip locked
    ),
    marked as (
        update billing.run_accounts ra set billed = true
        from claimed c where ra.run_id = p_run and ra.account_id = c.account_id
        returning ra.account_id
    )
    select array_agg(account_id order by account_id) into v_accounts from marked;
    if v_accounts is null then
        return;
    end if;
    select array_agg(c.account_id order by c.account_id), array_agg(c.charges order by c.account_id)
    into v_accounts, v_charges
    from billing.period_charges(v_accounts, v_run.period_start, v_run.period_end) c;
    billed := ledger.issue_bills(p_run, v_run.period_start, v_run.period_end,
                                 v_run.period_end + v_run.due_days, v_accounts, v_charges,
                                 p_actor);
    insert into billing.run_chunks (run_id, started_at, finished_at, billed)
    values (p_run, v_started, clock_timestamp(), billed);
    -- The fees charged, for their business events: one statement for the chunk.
    select coalesce(jsonb_agg(jsonb_build_object(
               'account', f.account_id, 'customer', a.customer_id, 'currency', a.currency,
               'amount_minor', f.charge, 'run_id', p_run, 'cycle', v_run.bill_cycle,
               'period_start', v_run.period_start, 'period_end', v_run.period_end)
               order by f.account_id), '[]'::jsonb)
    into fees
    from unnest(v_accounts, v_charges) as f(account_id, charge)
    join ledger.billing_accounts a on a.id = f.account_id
    where f.charge <> 0;
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
