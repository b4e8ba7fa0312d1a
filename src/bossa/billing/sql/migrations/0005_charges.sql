-- Issue 12: a bill carries what the contracts billed to the account owe for the run's
-- period: prorated by days, per product period (monthly, quarterly, yearly), at the
-- price version of each day, with one-off fees once (docs/billing.md, "Charges"). It
-- reads customers.contract_terms and customers.price_versions instead of
-- customers.contract_fees, and bills a whole chunk set-based (ledger.issue_bills).
drop function billing.bill_chunk(bigint, integer, text);

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
-- in the same transaction: the run's progress.
create function billing.bill_chunk(p_run bigint, p_limit integer, p_actor text)
returns integer
language plpgsql as $$
declare
    v_run billing.runs;
    v_started timestamptz := clock_timestamp();
    v_accounts text[];
    v_charges bigint[];
    v_done integer;
begin
    -- Share mode: chunks run side by side; a cancellation (for update) waits for them.
    select * into v_run from billing.runs where id = p_run for share;
    if v_run.status is distinct from 'running' then
        return 0;
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
        return 0;
    end if;
    select array_agg(c.account_id order by c.account_id), array_agg(c.charges order by c.account_id)
    into v_accounts, v_charges
    from billing.period_charges(v_accounts, v_run.period_start, v_run.period_end) c;
    v_done := ledger.issue_bills(p_run, v_run.period_start, v_run.period_end,
                                 v_run.period_end + v_run.due_days, v_accounts, v_charges,
                                 p_actor);
    insert into billing.run_chunks (run_id, started_at, finished_at, billed)
    values (p_run, v_started, clock_timestamp(), v_done);
    return v_done;
end
$$;
