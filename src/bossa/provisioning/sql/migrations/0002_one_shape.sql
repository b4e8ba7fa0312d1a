-- Provisioning reads the journal only through its published view journal.lane_entries,
-- and through one view of its own (provisioning.commands) that alone knows the payload
-- of a provisioning command; the order types are defined once, in models.OrderType; and
-- every division's buffer is a lane declared as provisioning's.

drop view provisioning.sql_plan_buffer;
drop view provisioning.mmdb_plan_buffer;
drop view provisioning.backup_mode_buffer;

-- Every provisioning command the journal holds, one row per entry of kind
-- provisioning.command, with the payload's fields (models.ProvisioningCommand) as
-- columns. The only SQL that knows those fields: the buffers below and the named
-- queries read this view, and tests/provisioning/test_payload.py holds it to the model.
create view provisioning.commands as
select e.id as entry_id,
       e.lane,
       e.state,
       e.attempts,
       e.key as sa_id,
       e.payload ->> 'division' as division,
       e.payload ->> 'server_type' as server_type,
       e.payload ->> 'product' as product,
       e.payload ->> 'wo_no' as wo_no,
       e.payload ->> 'intf_code' as intf_code,
       e.payload ->> 'cust_id' as cust_id,
       e.payload -> 'command' as command,
       e.payload -> 'bind_data' as bind_data,
       (e.payload ->> 'bind_method')::boolean as bind_method,
       e.payload ->> 'logname' as logname,
       (e.payload ->> 'ins_date')::timestamptz as ins_date,
       e.created_at as startdate,
       case when e.state = 'done' then e.finished_at end as enddate,
       e.last_error_code as errcode,
       e.last_error_message as errmsg,
       e.last_error_at as errdate
from journal.lane_entries e
where e.lane like 'provisioning.%' and e.kind = 'provisioning.command';

-- P8: the SQL plan buffer, with the seed's columns.
create view provisioning.sql_plan_buffer as
select entry_id, state, attempts, division, startdate, enddate, sa_id, wo_no, ins_date,
       intf_code, cust_id, command #>> '{}' as command, bind_data, bind_method, errcode,
       errmsg, logname, errdate
from provisioning.commands
where server_type = 'sql';

-- P9: the MMDB plan buffer (in-memory store divisions).
create view provisioning.mmdb_plan_buffer as
select entry_id, state, attempts, division, sa_id, wo_no, ins_date, logname,
       command #>> '{}' as command, errcode, errmsg, errdate, startdate as recv_date,
       intf_code
from provisioning.commands
where server_type = 'memstore';

-- The backup-mode buffer of protocol divisions (SOAP, REST).
create view provisioning.backup_mode_buffer as
select entry_id, state, attempts, division, server_type, startdate, enddate, sa_id, wo_no,
       ins_date, intf_code, cust_id, command #>> '{}' as command, bind_data, errcode, errmsg,
       logname, errdate
from provisioning.commands
where server_type in ('soap', 'rest');

-- INTF_CODE: the list of order types lived here, in STATUS_AFTER and in the API's
-- description; models.OrderType is now the one list (a plan is checked against it when
-- added), and the columns keep a check of the code's shape.
alter table provisioning.plan_commands
    drop constraint plan_commands_intf_code_fkey,
    add constraint plan_commands_intf_code_check check (intf_code ~ '^[0-9]{4}$');
alter table provisioning.orders
    drop constraint orders_intf_code_fkey,
    add constraint orders_intf_code_check check (intf_code ~ '^[0-9]{4}$');
drop table provisioning.intf_codes;

-- The divisions that exist get their lanes declared; a new division's lane is declared
-- in the transaction that adds it.
select journal.declare_lane('provisioning.' || division, 'provisioning')
from provisioning.divisions;
