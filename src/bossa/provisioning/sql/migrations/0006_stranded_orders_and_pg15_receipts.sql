-- Orders left accepted by a process that died between accepting them and recording its
-- direct calls are completed by the backup daemons' sweep; it looks them up here.
create index orders_accepted on provisioning.orders (received_at) where status = 'accepted';

-- Receive tables made before PostgreSQL 17 did not fill their parent's identity column
-- when a feeder inserts into them (the partition itself): there, `id` defaults to the
-- identity's sequence (store.ensure_receive_table does the same for new ones).
do $$
declare
    r record;
begin
    if current_setting('server_version_num')::integer >= 170000 then
        return;
    end if;
    for r in
        select c.oid::regclass as partition
        from pg_inherits i join pg_class c on c.oid = i.inhrelid
        where i.inhparent = 'provisioning.receipts'::regclass
    loop
        execute format(
            'alter table %s alter column id set default'
            ' nextval(pg_get_serial_sequence(''provisioning.receipts'', ''id''))',
            r.partition);
    end loop;
end
$$;
