-- The whole current schema of provisioning; migrations/ are the steps that build it:
-- divisions, versioned plans, orders, the service record, receive tables per product,
-- the provisioning log, and the plan buffers as views over the journal's published
-- journal.lane_entries.
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

-- The provisioning plan: per product and order type, the command for each division, at
-- its current version (the command itself is in plan_versions).
create table provisioning.plan_commands (
    -- The product (customers' own); checked by the service, customers.product_exists.
    product_code text not null,
    -- INTF_CODE: the order types are models.OrderType, checked when a plan is added.
    intf_code    text not null check (intf_code ~ '^[0-9]{4}$'),
    division     text not null references provisioning.divisions (division),
    position     smallint not null default 0,
    created_at   timestamptz not null default now(),
    created_by   text not null default current_user,
    version      integer not null check (version >= 1),   -- the current version
    primary key (product_code, intf_code, division)
);

-- Every version of every plan command, kept for ever: a command buffered under version
-- 3 is sent as version 3 said, whatever the plan says by then.
create table provisioning.plan_versions (
    product_code text not null,
    intf_code    text not null,
    division     text not null,
    version      integer not null check (version >= 1),
    command      jsonb not null,                  -- COMMAND template for the division's type
    bind_method  boolean not null default true,   -- BIND_METHOD: values bound, never spliced
    created_at   timestamptz not null default now(),
    created_by   text not null default current_user,
    primary key (product_code, intf_code, division, version),
    constraint plan_versions_plan_command_fkey foreign key (product_code, intf_code, division)
        references provisioning.plan_commands (product_code, intf_code, division)
);

-- A version, once written, is never changed or removed.
create function provisioning.plan_version_is_kept() returns trigger
language plpgsql as $$
begin
    raise exception 'plan versions are kept as written: set the plan again for a new version'
        using errcode = 'BP001';
end
$$;
create trigger plan_versions_kept
    before update or delete on provisioning.plan_versions
    for each row execute function provisioning.plan_version_is_kept();

create sequence provisioning.wo_no_seq;

-- Orders, from the API or a receive table; the result says where each command went.
create table provisioning.orders (
    wo_no            text primary key,                -- WO_NO
    idempotency_key  text unique,
    request_hash     text not null,
    product_code     text not null,                   -- checked when accepted
    sa_id            text not null,                   -- SA_ID
    cust_id          text,                            -- CUST_ID
    intf_code        text not null check (intf_code ~ '^[0-9]{4}$'),      -- INTF_CODE
    bind_data        jsonb not null,
    channel          text not null,
    status           text not null check (status in ('accepted', 'completed')),
    result           jsonb not null default '{}',
    received_at      timestamptz not null default now(),
    completed_at     timestamptz,
    created_by       text not null
);
create index orders_sa_id on provisioning.orders (sa_id, received_at);
-- The backup daemons' sweep for orders their process left accepted (normally none).
create index orders_accepted on provisioning.orders (received_at) where status = 'accepted';

-- P2: the service record (서비스 원부), the operator's own view of each contract.
create table provisioning.service_records (
    sa_id         text primary key,
    cust_id       text,
    product_code  text not null,
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

-- Every provisioning command the journal holds, one row per entry of kind
-- provisioning.command, with the payload's fields (models.ProvisioningCommand) as
-- columns, and the command and BIND_METHOD of the plan version the payload names (null
-- for an entry from before plans were versioned that matched none: it is never sent).
-- The only SQL that knows the payload's fields: the buffers below and the named queries
-- read this view, and tests/provisioning/test_payload.py holds it to the model.
create view provisioning.commands as
select c.*, v.command, v.bind_method
from (
    select e.id as entry_id,
           e.lane,
           e.state,
           e.attempts,
           e.key as sa_id,
           e.payload ->> 'division' as division,
           e.payload ->> 'server_type' as server_type,
           e.payload ->> 'product' as product,
           e.payload ->> 'intf_code' as intf_code,
           (e.payload ->> 'plan_version')::integer as plan_version,
           e.payload ->> 'wo_no' as wo_no,
           e.payload ->> 'cust_id' as cust_id,
           e.payload -> 'bind_data' as bind_data,
           e.payload ->> 'logname' as logname,
           (e.payload ->> 'ins_date')::timestamptz as ins_date,
           e.created_at as startdate,
           case when e.state = 'done' then e.finished_at end as enddate,
           -- The latest failure while the command is not delivered; empty once it is
           -- (the whole history stays in the entry: `buffer show`).
           case when e.state <> 'done' then e.last_error_code end as errcode,
           case when e.state <> 'done' then e.last_error_message end as errmsg,
           case when e.state <> 'done' then e.last_error_at end as errdate
    from journal.lane_entries e
    where e.lane like 'provisioning.%' and e.kind = 'provisioning.command'
) c
left join provisioning.plan_versions v
  on v.product_code = c.product
 and v.intf_code = c.intf_code
 and v.division = c.division
 and v.version = c.plan_version;

-- P8: the SQL plan buffer, with the seed's columns (and the plan version).
create view provisioning.sql_plan_buffer as
select entry_id, state, attempts, division, startdate, enddate, sa_id, wo_no, ins_date,
       intf_code, cust_id, command #>> '{}' as command, bind_data, bind_method, errcode,
       errmsg, logname, errdate, plan_version
from provisioning.commands
where server_type = 'sql';

-- P9: the MMDB plan buffer (in-memory store divisions).
create view provisioning.mmdb_plan_buffer as
select entry_id, state, attempts, division, sa_id, wo_no, ins_date, logname,
       command #>> '{}' as command, errcode, errmsg, errdate, startdate as recv_date,
       intf_code, plan_version
from provisioning.commands
where server_type = 'memstore';

-- The backup-mode buffer of protocol divisions (SOAP, REST).
create view provisioning.backup_mode_buffer as
select entry_id, state, attempts, division, server_type, startdate, enddate, sa_id, wo_no,
       ins_date, intf_code, cust_id, command #>> '{}' as command, bind_data, errcode, errmsg,
       logname, errdate, plan_version, bind_method
from provisioning.commands
where server_type in ('soap', 'rest');
