-- A billing account's terms (issue 12): a credit limit, the dunning profile billing
-- applies to it, and closing an account that is done with (never deleting it: bills and
-- postings refer to it). Who last changed the terms and when.

alter table ledger.accounts
    -- Minor units of the account's currency; null = no limit. Bounded like every amount.
    add column credit_limit    bigint check (credit_limit between 0 and 1000000000000000),
    -- The name of the dunning profile billing applies (docs/billing.md); 'standard' is
    -- the account's own grace_days and nothing more.
    add column dunning_profile text not null default 'standard'
                               check (dunning_profile ~ '^[a-z][a-z0-9_]{0,31}$'),
    add column updated_at      timestamptz,
    add column updated_by      text;

-- A closed account is billed no more and takes no payments; it keeps its history.
alter table ledger.accounts drop constraint accounts_status_check;
alter table ledger.accounts add constraint accounts_status_check
    check (status in ('active', 'suspended', 'closed'));
alter table ledger.accounts add constraint accounts_grace_days_bounded
    check (grace_days <= 3650);

-- published: ledger.billing_accounts
-- The accounts as other modules read them (billing's runs and dunning, import).
create or replace view ledger.billing_accounts as
select id, customer_id, currency, bill_cycle, status, grace_days, created_at, created_by,
       credit_limit, dunning_profile
from ledger.accounts;
