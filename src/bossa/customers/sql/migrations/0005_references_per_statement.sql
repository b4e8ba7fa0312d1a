-- A contract's references (customer, product, billing account) checked once per
-- statement over the rows it wrote, instead of a foreign key's check per row. Bulk
-- import writes contracts 50,000 at a time: the foreign keys ran a query and took a
-- key-share lock (a WAL record on the customer's row) for every row, which was half of
-- the import's time. One anti-join per statement costs a fraction of that and holds the
-- same guarantee for every writer (the service, import, SQL by hand), because what is
-- referred to is never deleted and its key never changes: customers are closed and
-- products retired, never deleted (customers.kept_forever below; ledger keeps its accounts
-- the same way, ledger/0007). A reference seen once therefore stays good, and no lock is
-- needed to keep it so. The account is checked through ledger's published view (no
-- foreign key crosses modules), so a contract can no longer name a missing account
-- whoever writes it.

alter table customers.contracts drop constraint contracts_customer_id_fkey;
alter table customers.contracts drop constraint contracts_product_code_fkey;

-- The rows a statement wrote (`written`, its transition table) refer only to what
-- exists; otherwise the statement fails as a foreign key would, naming the constraint
-- it replaces (bossa.db.translate answers it as a reference to nothing).
create function customers.contracts_refer_to_what_exists() returns trigger
language plpgsql as $$
declare
    v_missing text;
begin
    -- Each distinct value once (a customer has a few contracts, a product many), by an
    -- anti-join per reference, so each takes its own best plan (index probes for a few
    -- rows, a hash for a chunk of an import).
    select w.customer_id into v_missing
    from (select distinct customer_id from written) w
    where not exists (select 1 from customers.customers c where c.id = w.customer_id)
    limit 1;
    if found then
        raise exception 'a contract refers to customer % that does not exist', v_missing
            using errcode = 'foreign_key_violation', constraint = 'contracts_customer_id_fkey',
                  table = 'contracts', schema = 'customers';
    end if;
    select w.product_code into v_missing
    from (select distinct product_code from written) w
    where not exists (select 1 from customers.products p where p.code = w.product_code)
    limit 1;
    if found then
        raise exception 'a contract refers to product % that does not exist', v_missing
            using errcode = 'foreign_key_violation', constraint = 'contracts_product_code_fkey',
                  table = 'contracts', schema = 'customers';
    end if;
    select w.account_id into v_missing
    from (select distinct account_id from written where account_id is not null) w
    where not exists (select 1 from ledger.account_rows a where a.id = w.account_id)
    limit 1;
    if found then
        raise exception 'a contract refers to account % that does not exist', v_missing
            using errcode = 'foreign_key_violation', constraint = 'contracts_account_id_fkey',
                  table = 'contracts', schema = 'customers';
    end if;
    return null;
end
$$;

create trigger contracts_references_on_insert
    after insert on customers.contracts referencing new table as written
    for each statement execute function customers.contracts_refer_to_what_exists();
-- An update is checked for the rows whose references it changed, as a foreign key is:
-- a status change does not re-check what it did not touch (nor trip over an account a
-- contract named before accounts were checked at all).
create function customers.contracts_changed_refer_to_what_exists() returns trigger
language plpgsql as $$
declare
    v_missing text;
begin
    -- Only the rows the update gave another SA_ID, customer, product or account.
    select w.customer_id into v_missing
    from (
        select distinct c.customer_id from written c where not exists (
            select 1 from previous p
            where p.sa_id = c.sa_id and p.customer_id = c.customer_id
              and p.product_code = c.product_code
              and p.account_id is not distinct from c.account_id
        )
    ) w
    where not exists (select 1 from customers.customers c where c.id = w.customer_id)
    limit 1;
    if found then
        raise exception 'a contract refers to customer % that does not exist', v_missing
            using errcode = 'foreign_key_violation', constraint = 'contracts_customer_id_fkey',
                  table = 'contracts', schema = 'customers';
    end if;
    select w.product_code into v_missing
    from (
        select distinct c.product_code from written c where not exists (
            select 1 from previous p
            where p.sa_id = c.sa_id and p.customer_id = c.customer_id
              and p.product_code = c.product_code
              and p.account_id is not distinct from c.account_id
        )
    ) w
    where not exists (select 1 from customers.products p where p.code = w.product_code)
    limit 1;
    if found then
        raise exception 'a contract refers to product % that does not exist', v_missing
            using errcode = 'foreign_key_violation', constraint = 'contracts_product_code_fkey',
                  table = 'contracts', schema = 'customers';
    end if;
    select w.account_id into v_missing
    from (
        select distinct c.account_id from written c
        where c.account_id is not null and not exists (
            select 1 from previous p
            where p.sa_id = c.sa_id and p.customer_id = c.customer_id
              and p.product_code = c.product_code
              and p.account_id is not distinct from c.account_id
        )
    ) w
    where not exists (select 1 from ledger.account_rows a where a.id = w.account_id)
    limit 1;
    if found then
        raise exception 'a contract refers to account % that does not exist', v_missing
            using errcode = 'foreign_key_violation', constraint = 'contracts_account_id_fkey',
                  table = 'contracts', schema = 'customers';
    end if;
    return null;
end
$$;

create trigger contracts_references_on_update
    after update on customers.contracts
    referencing old table as previous new table as written
    for each statement execute function customers.contracts_changed_refer_to_what_exists();

-- What contracts refer to stays: no delete, no truncate, no change of key. A customer is
-- closed and a product retired instead (their status), which keeps their history too.
create function customers.kept_forever() returns trigger
language plpgsql as $$
begin
    raise exception '%.% rows are never deleted nor their keys changed (close or retire them)',
        tg_table_schema, tg_table_name
        using errcode = 'check_violation', constraint = tg_table_name || '_kept',
              table = tg_table_name, schema = tg_table_schema;
end
$$;

create trigger customers_kept before delete on customers.customers
    for each statement execute function customers.kept_forever();
create trigger customers_kept_truncate before truncate on customers.customers
    for each statement execute function customers.kept_forever();
create trigger customers_key_kept before update of id on customers.customers
    for each row when (old.id is distinct from new.id)
    execute function customers.kept_forever();
create trigger products_kept before delete on customers.products
    for each statement execute function customers.kept_forever();
create trigger products_kept_truncate before truncate on customers.products
    for each statement execute function customers.kept_forever();
create trigger products_key_kept before update of code on customers.products
    for each row when (old.code is distinct from new.code)
    execute function customers.kept_forever();
