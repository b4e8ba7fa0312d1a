-- Billing accounts are closed, never deleted, and their id never changes: contracts refer
-- to them (customers checks a contract's account once per statement, customers/0005,
-- and that check holds only while what it saw stays), and so do bills and postings.
-- Currencies are never deleted either, which lets an account's currency be checked once
-- per statement too instead of by a foreign key per row (its query and lock were most of
-- what a bulk import of accounts cost beyond the table's own indexes).
create function ledger.kept_forever() returns trigger
language plpgsql as $$
begin
    raise exception 'ledger.% rows are never deleted nor their keys changed', tg_table_name
        using errcode = 'check_violation', constraint = tg_table_name || '_kept',
              table = tg_table_name, schema = tg_table_schema;
end
$$;

create trigger accounts_kept before delete on ledger.accounts
    for each statement execute function ledger.kept_forever();
create trigger accounts_kept_truncate before truncate on ledger.accounts
    for each statement execute function ledger.kept_forever();
create trigger accounts_key_kept before update of id on ledger.accounts
    for each row when (old.id is distinct from new.id)
    execute function ledger.kept_forever();
create trigger currencies_kept before delete on ledger.currencies
    for each statement execute function ledger.kept_forever();
create trigger currencies_kept_truncate before truncate on ledger.currencies
    for each statement execute function ledger.kept_forever();
create trigger currencies_key_kept before update of code on ledger.currencies
    for each row when (old.code is distinct from new.code)
    execute function ledger.kept_forever();

alter table ledger.accounts drop constraint accounts_currency_fkey;

-- The accounts a statement wrote are in currencies the ledger knows; otherwise it fails
-- as the foreign key it replaces did, under that name.
create function ledger.accounts_in_known_currencies() returns trigger
language plpgsql as $$
declare
    v_missing text;
begin
    -- Each distinct currency once: a chunk of an import holds one or two.
    select w.currency into v_missing
    from (select distinct currency from written) w
    where not exists (select 1 from ledger.currencies c where c.code = w.currency)
    limit 1;
    if found then
        raise exception 'an account is in currency % that the ledger does not know', v_missing
            using errcode = 'foreign_key_violation', constraint = 'accounts_currency_fkey',
                  table = 'accounts', schema = 'ledger';
    end if;
    return null;
end
$$;

create trigger accounts_currency_on_insert
    after insert on ledger.accounts referencing new table as written
    for each statement execute function ledger.accounts_in_known_currencies();
create trigger accounts_currency_on_update
    after update on ledger.accounts referencing new table as written
    for each statement execute function ledger.accounts_in_known_currencies();
