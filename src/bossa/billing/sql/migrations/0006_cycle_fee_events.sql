-- Issue 14 (S1): each cycle fee a bill run charges publishes a CycleFeeApplied business
-- event in the transaction of the charge. The chunk function computes the fees set-based
-- and returns them with the accounts billed; billing's service publishes their events
-- (through sync's notification list, policy hook and publisher) before the chunk commits.
drop function billing.bill_chunk(bigint, integer, text);

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
