-- Buffer columns as operators read them (issue 13): ERRCODE, ERRMSG and ERRDATE show the
-- latest failure of a command that is not delivered, and are empty once it is (the
-- history stays in the entry); the backup-mode buffer shows BIND_METHOD too.
create or replace view provisioning.commands as
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

create or replace view provisioning.backup_mode_buffer as
select entry_id, state, attempts, division, server_type, startdate, enddate, sa_id, wo_no,
       ins_date, intf_code, cust_id, command #>> '{}' as command, bind_data, errcode, errmsg,
       logname, errdate, plan_version, bind_method
from provisioning.commands
where server_type in ('soap', 'rest');
