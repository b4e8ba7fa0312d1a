-- Bulk import: the views it checks and exports through, the function it applies through.

-- Bulk import (bossa.imports) reads and writes billing accounts only through what follows.

-- published: ledger.account_rows
-- Every billing account, in the columns of an accounts file (import checks account ids
-- and a contract's account's customer against it, export writes it).
create view ledger.account_rows as
select id, customer_id, currency, bill_cycle, credit_limit, dunning_profile, grace_days, status
from ledger.accounts;

-- published: ledger.currency_codes
-- The currencies an account may be kept in.
create view ledger.currency_codes as
select code from ledger.currencies;

-- published: ledger.import_accounts
-- Open checked accounts; a missing bill cycle is MONTHLY, dunning profile standard, grace
-- 14 days, status active (another status records who set it and when). Returns the rows
-- inserted.
create function ledger.import_accounts(
    p_id text[], p_customer_id text[], p_currency text[], p_bill_cycle text[],
    p_credit_limit bigint[], p_dunning_profile text[], p_grace_days bigint[], p_status text[],
    p_actor text
) returns bigint
language sql as $$
    with inserted as (
        insert into ledger.accounts (
            id, customer_id, currency, bill_cycle, credit_limit, dunning_profile, grace_days,
            status, status_changed_at, status_changed_by, created_by
        )
        select id, customer_id, currency, coalesce(bill_cycle, 'MONTHLY'), credit_limit,
               coalesce(dunning_profile, 'standard'), coalesce(grace_days, 14)::integer,
               coalesce(status, 'active'),
               case when coalesce(status, 'active') <> 'active' then now() end,
               case when coalesce(status, 'active') <> 'active' then p_actor end,
               p_actor
        from unnest(p_id, p_customer_id, p_currency, p_bill_cycle, p_credit_limit,
                    p_dunning_profile, p_grace_days, p_status)
             as u(id, customer_id, currency, bill_cycle, credit_limit, dunning_profile,
                  grace_days, status)
        returning 1
    )
    select count(*) from inserted
$$;
