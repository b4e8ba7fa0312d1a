-- Nothing runs that a plan did not define (issue 11): plans are versioned, and a
-- provisioning payload names its plan command and version and carries bind data only;
-- the command is rendered from that version at delivery. Division URLs and credentials
-- are checked by the service (models.check_server_url); the table keeps its columns.

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
    primary key (product_code, intf_code, division, version)
);

-- Today's plan commands are version 1 of each.
insert into provisioning.plan_versions
    (product_code, intf_code, division, version, command, bind_method, created_at, created_by)
select product_code, intf_code, division, 1, command, bind_method, created_at, created_by
from provisioning.plan_commands;

-- A plan command now says which version is current; its command lives in that version.
alter table provisioning.plan_commands add column version integer not null default 1;
alter table provisioning.plan_commands alter column version drop default;
alter table provisioning.plan_commands
    add constraint plan_commands_version_check check (version >= 1),
    drop column command,
    drop column bind_method;
alter table provisioning.plan_versions
    add constraint plan_versions_plan_command_fkey
    foreign key (product_code, intf_code, division)
    references provisioning.plan_commands (product_code, intf_code, division);

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

-- Entries buffered before this migration carry their command text. Each one whose text
-- (and BIND_METHOD) matches a plan command of its division and order type (of its
-- product, when the payload names one) now names that version instead, and carries
-- bind data only. One that matches none keeps its text: delivery refuses it with a
-- clear error, and it is never executed.
update journal.entries e
set payload = (e.payload - 'command' - 'bind_method')
    || jsonb_build_object('product', m.product_code, 'plan_version', m.version)
from (
    select distinct on (x.id) x.id, v.product_code, v.version
    from journal.entries x
    join provisioning.plan_versions v
      on v.division = x.payload ->> 'division'
     and v.intf_code = x.payload ->> 'intf_code'
     and (x.payload ->> 'product' is null or v.product_code = x.payload ->> 'product')
     and v.command = x.payload -> 'command'
     and v.bind_method = coalesce((x.payload ->> 'bind_method')::boolean, true)
    where x.lane like 'provisioning.%'
      and x.kind = 'provisioning.command'
      and x.payload ? 'command'
    order by x.id, v.product_code, v.version desc
) m
where e.id = m.id;

-- The views: a command's template comes from the plan version its payload names.
drop view provisioning.sql_plan_buffer;
drop view provisioning.mmdb_plan_buffer;
drop view provisioning.backup_mode_buffer;
drop view provisioning.commands;

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
           e.last_error_code as errcode,
           e.last_error_message as errmsg,
           e.last_error_at as errdate
    from journal.lane_entries e
    where e.lane like 'provisioning.%' and e.kind = 'provisioning.command'
) c
left join provisioning.plan_versions v
  on v.product_code = c.product
 and v.intf_code = c.intf_code
 and v.division = c.division
 and v.version = c.plan_version;

create view provisioning.sql_plan_buffer as
select entry_id, state, attempts, division, startdate, enddate, sa_id, wo_no, ins_date,
       intf_code, cust_id, command #>> '{}' as command, bind_data, bind_method, errcode,
       errmsg, logname, errdate, plan_version
from provisioning.commands
where server_type = 'sql';

create view provisioning.mmdb_plan_buffer as
select entry_id, state, attempts, division, sa_id, wo_no, ins_date, logname,
       command #>> '{}' as command, errcode, errmsg, errdate, startdate as recv_date,
       intf_code, plan_version
from provisioning.commands
where server_type = 'memstore';

create view provisioning.backup_mode_buffer as
select entry_id, state, attempts, division, server_type, startdate, enddate, sa_id, wo_no,
       ins_date, intf_code, cust_id, command #>> '{}' as command, bind_data, errcode, errmsg,
       logname, errdate, plan_version
from provisioning.commands
where server_type in ('soap', 'rest');
