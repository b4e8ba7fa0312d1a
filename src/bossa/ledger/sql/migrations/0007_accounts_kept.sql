-- Billing accounts are closed, never deleted, and their id never changes: contracts refer
-- to them (customers checks a contract's account once per statement, customers/0005,
-- and that check holds only while what it saw stays), and so do bills and postings.
create function ledger.accounts_kept() returns trigger
language plpgsql as $$
begin
    raise exception 'billing accounts are never deleted nor their ids changed (close them)'
        using errcode = 'check_violation', constraint = 'accounts_kept',
              table = 'accounts', schema = 'ledger';
end
$$;

create trigger accounts_kept before delete on ledger.accounts
    for each statement execute function ledger.accounts_kept();
create trigger accounts_kept_truncate before truncate on ledger.accounts
    for each statement execute function ledger.accounts_kept();
create trigger accounts_key_kept before update of id on ledger.accounts
    for each row when (old.id is distinct from new.id)
    execute function ledger.accounts_kept();
