-- What other modules may use of the ledger. They read it through published views (one
-- per table, over that table alone: the planner inlines them, so a bill run's plans are
-- those on the tables) and write it only through published functions (`ledger.post`,
-- and `ledger.issue_bill`, the ledger's half of billing one account, which moved here out
-- of billing.bill_chunk). Accounts also record who last changed their service status,
-- and no longer hold a foreign key into customers' table.

alter table ledger.accounts
    add column status_changed_at timestamptz,
    add column status_changed_by text;

-- An account's customer is checked through customers' service when the account opens
-- (customers.customer_exists); a foreign key would name customers' table.
alter table ledger.accounts drop constraint accounts_customer_id_fkey;

-- published: ledger.billing_accounts
-- The accounts as other modules read them (billing's runs and dunning).
create view ledger.billing_accounts as
select id, customer_id, currency, bill_cycle, status, grace_days, created_at, created_by
from ledger.accounts;

-- published: ledger.book_balances
-- Each account's current balance per book.
create view ledger.book_balances as
select account_id, book, amount from ledger.balances;

-- published: ledger.posted_transactions
-- Every transaction posted, with its reference (a bill, a staged item, a payment).
create view ledger.posted_transactions as
select id, account_id, kind, amount, idempotency_key, reference, created_at, created_by
from ledger.transactions;

-- published: ledger.transaction_postings
-- The postings of every transaction (positive = debit).
create view ledger.transaction_postings as
select id, transaction_id, account_id, book, amount from ledger.postings;

-- published: ledger.issued_bills
-- Every bill issued, by bill run.
create view ledger.issued_bills as
select id, account_id, bill_run_id, period_start, period_end, recurring, usage, amount,
       paid_from_prepaid, due_date, created_at
from ledger.bills;

-- published: ledger.issue_bill
-- Issue an account's bill for a period: the recurring charges the caller computed, plus
-- the account's usage rated before the period's end and not yet billed, posted as a
-- bill and paid from prepaid funds where there are some. Returns the bill's id. The
-- unique (bill_run_id, account_id) refuses a second bill of the same run.
create function ledger.issue_bill(
    p_account text, p_run bigint, p_period_start date, p_period_end date, p_due_date date,
    p_recurring bigint, p_actor text
) returns bigint
language plpgsql as $$
declare
    v_usage bigint;
    v_usage_ids bigint[];
    v_amount bigint;
    v_prepaid bigint;
    v_from_prepaid bigint;
    v_bill bigint;
begin
    -- Claim the period's unbilled usage first (bill_id 0 marks it within this
    -- transaction), so usage rated concurrently is billed next time, not lost.
    with claimed as (
        update ledger.rated_usage set bill_id = 0
        where account_id = p_account and bill_id is null
          and used_at < (p_period_end + 1)::timestamptz
        returning id, charge
    )
    select coalesce(sum(charge), 0), array_agg(id) into v_usage, v_usage_ids from claimed;
    v_amount := p_recurring + v_usage;
    insert into ledger.bills (account_id, bill_run_id, period_start, period_end,
                              recurring, usage, amount, due_date)
    values (p_account, p_run, p_period_start, p_period_end, p_recurring, v_usage,
            v_amount, p_due_date)
    returning id into v_bill;
    if v_usage_ids is not null then
        -- By primary key: no index covers bill_id = 0 (bench/billing found the scan).
        update ledger.rated_usage set bill_id = v_bill where id = any (v_usage_ids);
    end if;
    if v_amount > 0 then
        -- A bill: receivable +a, revenue -a.
        perform ledger.post(p_account, 'bill', v_amount,
                            array['receivable', 'revenue']::ledger.book[],
                            array[v_amount, -v_amount], null, 'bill:' || v_bill, p_actor);
        select coalesce(-amount, 0) into v_prepaid from ledger.balances
        where account_id = p_account and book = 'prepaid';
        v_from_prepaid := least(greatest(coalesce(v_prepaid, 0), 0), v_amount);
        if v_from_prepaid > 0 then
            -- Paid from prepaid funds: prepaid +a, receivable -a.
            perform ledger.post(p_account, 'bill_from_prepaid', v_from_prepaid,
                                array['prepaid', 'receivable']::ledger.book[],
                                array[v_from_prepaid, -v_from_prepaid], null,
                                'bill:' || v_bill, p_actor);
            update ledger.bills set paid_from_prepaid = v_from_prepaid where id = v_bill;
        end if;
    end if;
    return v_bill;
end
$$;
