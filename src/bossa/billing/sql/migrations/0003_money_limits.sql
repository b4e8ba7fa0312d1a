-- Issue 11 (money limits). A bill run can be cancelled before billing has begun: it
-- records who and when, frees its period for a later run, and stops holding the books.
-- Payments read what is staged for their account (the per-account maximum) by account,
-- not by scanning every unsettled item of the run. A bill-run chunk holds the run's row
-- in share mode, so a cancellation waits out the chunks under way and no chunk bills
-- after it.

alter table billing.runs
    add column cancelled_at timestamptz,
    add column cancelled_by text;

alter table billing.runs drop constraint runs_status_check;
alter table billing.runs add constraint runs_status_check
    check (status in ('running', 'settling', 'settled', 'cancelled'));

-- A period is billed once per cycle; a cancelled run leaves it to the next.
alter table billing.runs drop constraint runs_bill_cycle_period_start_key;
create unique index runs_one_period on billing.runs (bill_cycle, period_start)
    where cancelled_at is null;

-- At most one run holds the books at a time.
drop index billing.runs_one_open;
create unique index runs_one_open on billing.runs ((true)) where status in ('running', 'settling');

create index staged_deposits_account on billing.staged_deposits (account_id)
    where settled_at is null;
create index staged_writeoffs_account on billing.staged_writeoffs (account_id)
    where settled_at is null;

create or replace function billing.bill_chunk(p_run bigint, p_limit integer, p_actor text)
returns integer
language plpgsql as $$
declare
    v_run billing.runs;
    r record;
    v_recurring bigint;
    v_done integer := 0;
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
    return v_done;
end
$$;
