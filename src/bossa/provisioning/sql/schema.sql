-- The whole current schema of provisioning; migrations/ are the steps that build it.
-- service record, receive tables per product, the provisioning log, and the plan
-- buffers as views over the journal.
create schema provisioning;

create type provisioning.server_type as enum ('sql', 'memstore', 'soap', 'rest');

-- P7: the division table, one row per target system.
create table provisioning.divisions (
    division     text primary key check (division ~ '^[A-Z][A-Z0-9_]{0,63}$'),  -- DIVISION
    server_ip    text,                                                           -- SERVER_IP
    server_port  integer check (server_port between 1 and 65535),              -- SERVER_PORT
    server_url   text,                                                           -- SERVER_URL
    server_name  text,                                                           -- SERVER_NAME
    server_type  provisioning.server_type not null,                             -- SERVER_TYPE
    server_used  boolean not null default true,                                 -- SERVER_USED
    -- Secrets for the adapter (password, token); never shown, never logged.
    credentials  jsonb not null default '{}' check (jsonb_typeof(credentials) = 'object'),
    timeout_ms   integer not null default 5000 check (timeout_ms between 10 and 600000),
    -- P4a: known to be down until this time (set when a call finds it unreachable).
    down_until   timestamptz,
    last_error   text,
    created_at   timestamptz not null default now(),
    created_by   text not null default current_user,
    updated_at   timestamptz not null default now(),
    updated_by   text not null default current_user
);

-- INTF_CODE: the order types.
create table provisioning.intf_codes (
    intf_code  text primary key check (intf_code ~ '^[0-9]{4}$'),
    name       text not null
);
insert into provisioning.intf_codes (intf_code, name) values
    ('4201', 'new'), ('4202', 'change'), ('4203', 'terminate'),
    ('4204', 'suspend'), ('4205', 'resume');

-- The provisioning plan: per product and order type, the command for each division.
create table provisioning.plan_commands (
    product_code text not null references customers.products (code),
    intf_code    text not null references provisioning.intf_codes (intf_code),
    division     text not null references provisioning.divisions (division),
    position     smallint not null default 0,
    command      jsonb not null,                  -- COMMAND template for the division's type
    bind_method  boolean not null default true,   -- BIND_METHOD: values bound, never spliced
    created_at   timestamptz not null default now(),
    created_by   text not null default current_user,
    primary key (product_code, intf_code, division)
);

create sequence provisioning.wo_no_seq;

-- Orders, from the API or a receive table; the result says where each command went.
create table provisioning.orders (
    wo_no            text primary key,                -- WO_NO
    idempotency_key  text unique,
    request_hash     text not null,
    product_code     text not null references customers.products (code),
    sa_id            text not null,                   -- SA_ID
    cust_id          text,                            -- CUST_ID
    intf_code        text not null references provisioning.intf_codes (intf_code),
    bind_data        jsonb not null,
    channel          text not null,
    status           text not null check (status in ('accepted', 'completed')),
    result           jsonb not null default '{}',
    received_at      timestamptz not null default now(),
    completed_at     timestamptz,
    created_by       text not null
);
create index orders_sa_id on provisioning.orders (sa_id, received_at);

-- P2: the service record (서비스 원부), the operator's own view of each contract.
create table provisioning.service_records (
    sa_id         text primary key,
    cust_id       text,
    product_code  text not null references customers.products (code),
    status        text not null check (status in ('active', 'suspended', 'terminated')),
    attributes    jsonb not null default '{}',
    last_wo_no    text not null,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now()
);

-- P1: orders arrive in a receive table per product: one list partition per product,
-- named receipts_<product>, created when the product is added to provisioning.
create table provisioning.receipts (
    id            bigint generated always as identity,
    product_code  text not null,
    sa_id         text,
    cust_id       text,
    intf_code     text,
    wo_no         text,
    bind_data     jsonb not null default '{}',
    status        text not null default 'new' check (status in ('new', 'done', 'rejected')),
    error         text,
    received_at   timestamptz not null default now(),
    processed_at  timestamptz,
    primary key (product_code, id)
) partition by list (product_code);
create index receipts_new on provisioning.receipts (product_code, sa_id, id) where status = 'new';

-- P11: every successful provisioning, direct or from the buffer.
create table provisioning.log (
    entry_id      bigint primary key,   -- the journal entry, the idempotency key at the target
    division      text not null,
    sa_id         text not null,
    wo_no         text not null,
    intf_code     text not null,
    mode          text not null check (mode in ('direct', 'backup')),
    attempts      integer not null,
    delivered_at  timestamptz not null default now()
);
create index log_sa_id on provisioning.log (sa_id, delivered_at);
create index log_wo_no on provisioning.log (wo_no);

-- P8: the SQL plan buffer, with the seed's columns, over the journal's entries.
create view provisioning.sql_plan_buffer as
select e.id as entry_id, e.state::text as state, e.attempts,
       e.payload ->> 'division' as division,
       e.created_at as startdate,
       case when e.state = 'done' then e.finished_at end as enddate,
       e.key as sa_id,
       e.payload ->> 'wo_no' as wo_no,
       (e.payload ->> 'ins_date')::timestamptz as ins_date,
       e.payload ->> 'intf_code' as intf_code,
       e.payload ->> 'cust_id' as cust_id,
       e.payload ->> 'command' as command,
       e.payload -> 'bind_data' as bind_data,
       (e.payload ->> 'bind_method')::boolean as bind_method,
       e.errors -> -1 ->> 'code' as errcode,
       e.errors -> -1 ->> 'message' as errmsg,
       e.payload ->> 'logname' as logname,
       (e.errors -> -1 ->> 'at')::timestamptz as errdate
from journal.entries e
where e.lane like 'provisioning.%' and e.payload ->> 'server_type' = 'sql';

-- P9: the MMDB plan buffer (in-memory store divisions).
create view provisioning.mmdb_plan_buffer as
select e.id as entry_id, e.state::text as state, e.attempts,
       e.payload ->> 'division' as division,
       e.key as sa_id,
       e.payload ->> 'wo_no' as wo_no,
       (e.payload ->> 'ins_date')::timestamptz as ins_date,
       e.payload ->> 'logname' as logname,
       e.payload ->> 'command' as command,
       e.errors -> -1 ->> 'code' as errcode,
       e.errors -> -1 ->> 'message' as errmsg,
       (e.errors -> -1 ->> 'at')::timestamptz as errdate,
       e.created_at as recv_date,
       e.payload ->> 'intf_code' as intf_code
from journal.entries e
where e.lane like 'provisioning.%' and e.payload ->> 'server_type' = 'memstore';

-- The backup-mode buffer of protocol divisions (SOAP, REST).
create view provisioning.backup_mode_buffer as
select e.id as entry_id, e.state::text as state, e.attempts,
       e.payload ->> 'division' as division,
       e.payload ->> 'server_type' as server_type,
       e.created_at as startdate,
       case when e.state = 'done' then e.finished_at end as enddate,
       e.key as sa_id,
       e.payload ->> 'wo_no' as wo_no,
       (e.payload ->> 'ins_date')::timestamptz as ins_date,
       e.payload ->> 'intf_code' as intf_code,
       e.payload ->> 'cust_id' as cust_id,
       e.payload ->> 'command' as command,
       e.payload -> 'bind_data' as bind_data,
       e.errors -> -1 ->> 'code' as errcode,
       e.errors -> -1 ->> 'message' as errmsg,
       e.payload ->> 'logname' as logname,
       (e.errors -> -1 ->> 'at')::timestamptz as errdate
from journal.entries e
where e.lane like 'provisioning.%' and e.payload ->> 'server_type' in ('soap', 'rest');
