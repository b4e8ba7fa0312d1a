-- Billing meets the other modules only through what they publish: a bill run reads
-- accounts and contract fees through published views and leaves the bill itself to
-- ledger.issue_bill (the views are inlined by the planner, so the plans do not change).
-- Contracts are suspended and restored through customers' service, no longer here.
drop function billing.bill_chunk(bigint, integer, text);

-- Bill up to p_limit of a run's pending accounts in this transaction: the recurring
-- charges of the customer's contracts (customers.contract_fees) and the ledger's half,
-- usage, the bill and its postings (ledger.issue_bill). Accounts are claimed with SKIP
-- LOCKED, so parallel workers share a run, and a worker killed mid-chunk leaves its
-- accounts pending: each account is billed exactly once.
create function billing.bill_chunk(p_run bigint, p_limit integer, p_actor text)
returns integer
language plpgsql as $$
declare
    v_run billing.runs;
    r record;
    v_recurring bigint;
    v_done integer := 0;
begin
    select * into v_run from billing.runs where id = p_run;
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

-- A staged item's account is checked by the ledger's service when the payment is taken;
-- a foreign key into ledger.accounts would name the ledger's table.
alter table billing.staged_deposits drop constraint staged_deposits_account_id_fkey;
alter table billing.staged_writeoffs drop constraint staged_writeoffs_account_id_fkey;

-- B3 sends the restore when the arrears are paid, through the service lane: the lane's
-- entry records it. This column was never written.
alter table billing.staged_writeoffs drop column restore_sent_at;

-- The service lane (suspend and restore orders for provisioning) is billing's own.
select journal.declare_lane('billing.service', 'billing');
