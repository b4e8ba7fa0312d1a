-- Rated usage's account checked once per statement over the rows it wrote, instead of a
-- foreign key's check per row. ledger.add_usage writes a rating batch's rows at once
-- (one per account and day: ~86,000 for 200,000 CDRs); the foreign key ran a query and
-- took a key-share lock on the account's row for each, about 0.55 s of the 1.25 s that
-- call took (bench/rating, the warm file's "allowances and ledger"). Accounts are never
-- deleted and their id never changes (0008), so an account seen once stays good and an
-- anti-join per statement holds the same guarantee for every writer, as customers/0005
-- does for contracts. A missing account still fails the statement as the foreign key
-- did, under its name (rating learns of it instead of charging nobody).

alter table ledger.rated_usage drop constraint rated_usage_account_id_fkey;

create function ledger.usage_refers_to_accounts() returns trigger
language plpgsql as $$
declare
    v_missing text;
begin
    -- No LIMIT nor DISTINCT: either makes the planner probe the index once per row
    -- (86k rows: 110-380 ms); as an aggregate it takes a hash anti-join for a batch
    -- (45 ms) and still probes for a few rows. The smallest missing account is named.
    select min(w.account_id) into v_missing
    from written w
    where not exists (select 1 from ledger.accounts a where a.id = w.account_id);
    if v_missing is not null then
        raise exception 'rated usage refers to account % that does not exist', v_missing
            using errcode = 'foreign_key_violation', constraint = 'rated_usage_account_id_fkey',
                  table = 'rated_usage', schema = 'ledger';
    end if;
    return null;
end
$$;

create trigger rated_usage_account_on_insert
    after insert on ledger.rated_usage referencing new table as written
    for each statement execute function ledger.usage_refers_to_accounts();
-- An update that moves a row to another account (none of bossa's does: billing sets
-- bill_id alone, so this trigger never fires for it) is checked row by row.
create function ledger.moved_usage_refers_to_account() returns trigger
language plpgsql as $$
begin
    if not exists (select 1 from ledger.accounts a where a.id = new.account_id) then
        raise exception 'rated usage refers to account % that does not exist', new.account_id
            using errcode = 'foreign_key_violation', constraint = 'rated_usage_account_id_fkey',
                  table = 'rated_usage', schema = 'ledger';
    end if;
    return new;
end
$$;

create trigger rated_usage_account_on_update
    before update of account_id on ledger.rated_usage
    for each row when (old.account_id is distinct from new.account_id)
    execute function ledger.moved_usage_refers_to_account();
