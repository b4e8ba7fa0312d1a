-- Issue 12: a bill run's chunk issues its bills set-based (ledger.issue_bills): the same
-- writes as ledger.issue_bill per account, in a few statements for the whole chunk.
-- published: ledger.issue_bills
-- Issue the bills of many accounts for one period at once, set-based (a bill run's
-- chunk): per account the recurring charges the caller computed (p_recurring, in the
-- order of p_accounts) plus its usage rated before the period's end and not yet billed,
-- posted as a bill and paid from prepaid funds where there are some; the same writes as
-- ledger.issue_bill for each account, in a few statements instead of a dozen per
-- account. Every transaction's postings are a pair (+a, -a), so each sums to zero by
-- construction, and balances move in the same statement. Returns the bills issued. The
-- unique (bill_run_id, account_id) refuses a second bill of the same run.
create function ledger.issue_bills(
    p_run bigint, p_period_start date, p_period_end date, p_due_date date,
    p_accounts text[], p_recurring bigint[], p_actor text
) returns integer
language plpgsql as $$
declare
    v_usage_ids bigint[];
    v_usage_accounts text[];
    v_usage_charges bigint[];
    v_bills integer;
begin
    if cardinality(p_accounts) is distinct from cardinality(p_recurring) then
        raise exception 'issue_bills: % accounts but % recurring amounts',
            cardinality(p_accounts), cardinality(p_recurring)
            using errcode = 'invalid_parameter_value';
    end if;
    -- The period's unbilled usage of these accounts, locked: usage rated concurrently
    -- and committed after this statement is billed next time, not lost.
    -- Read once, here: the sums and the marking below use these arrays (looking the
    -- ids up again per bill was a nested loop over both: bench/billing).
    select array_agg(id), array_agg(account_id), array_agg(charge)
    into v_usage_ids, v_usage_accounts, v_usage_charges
    from (
        select id, account_id, charge from ledger.rated_usage
        where account_id = any (p_accounts) and bill_id is null
          and used_at < (p_period_end + 1)::timestamptz
        for update
    ) u;
    with chunk as (
        select account_id, recurring from unnest(p_accounts, p_recurring) as c(account_id, recurring)
    ),
    usage as (
        select account_id, sum(charge) as usage
        from unnest(v_usage_accounts, v_usage_charges) as u(account_id, charge)
        group by account_id
    ),
    computed as (
        select c.account_id, c.recurring, coalesce(u.usage, 0) as usage,
               c.recurring + coalesce(u.usage, 0) as amount,
               least(greatest(coalesce(-p.amount, 0), 0), c.recurring + coalesce(u.usage, 0))
                   as from_prepaid
        from chunk c
        left join usage u on u.account_id = c.account_id
        left join ledger.balances p on p.account_id = c.account_id and p.book = 'prepaid'
    ),
    bills as (
        insert into ledger.bills (account_id, bill_run_id, period_start, period_end,
                                  recurring, usage, amount, paid_from_prepaid, due_date)
        select account_id, p_run, p_period_start, p_period_end, recurring, usage, amount,
               from_prepaid, p_due_date
        from computed
        returning id, account_id, amount, paid_from_prepaid
    ),
    marked as (
        update ledger.rated_usage r set bill_id = b.id
        from unnest(v_usage_ids, v_usage_accounts) as u(id, account_id)
        join bills b on b.account_id = u.account_id
        where r.id = u.id
    ),
    moves as (
        -- A bill: receivable +a, revenue -a. Paid from prepaid funds: prepaid +x,
        -- receivable -x.
        select b.id as bill_id, b.account_id, 'bill' as kind, b.amount,
               'receivable'::ledger.book as debit, 'revenue'::ledger.book as credit
        from bills b where b.amount > 0
        union all
        select b.id, b.account_id, 'bill_from_prepaid', b.paid_from_prepaid,
               'prepaid'::ledger.book, 'receivable'::ledger.book
        from bills b where b.paid_from_prepaid > 0
    ),
    tx as (
        insert into ledger.transactions (account_id, kind, amount, reference, created_by)
        select account_id, kind, amount, 'bill:' || bill_id, p_actor from moves
        returning id, account_id, kind, amount, reference
    ),
    legs as (
        select tx.id, tx.account_id, l.book, l.amount
        from tx
        join moves m on 'bill:' || m.bill_id = tx.reference and m.kind = tx.kind
        cross join lateral (values (m.debit, tx.amount), (m.credit, -tx.amount)) as l(book, amount)
    ),
    posted as (
        insert into ledger.postings (transaction_id, account_id, book, amount)
        select id, account_id, book, amount from legs
    ),
    moved as (
        insert into ledger.balances as bal (account_id, book, amount)
        select account_id, book, sum(amount) from legs group by account_id, book
        on conflict (account_id, book) do update set amount = bal.amount + excluded.amount
    )
    select count(*) into v_bills from bills;
    return v_bills;
end
$$;
