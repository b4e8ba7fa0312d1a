-- Orders left accepted by a process that died between accepting them and recording its
-- direct calls are completed by the backup daemons' sweep; it looks them up here.
create index orders_accepted on provisioning.orders (received_at) where status = 'accepted';
