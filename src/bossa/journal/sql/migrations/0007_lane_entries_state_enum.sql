-- journal.lane_entries shows `state` as text, and a filter on a cast column cannot use
-- the journal's partial indexes, which are on the enum: sync's "any event held?" and
-- "READY backlog" checks scanned every entry the journal keeps (70-110 ms over 300,000
-- finished entries, on every listener batch and pipeline check; 0.04 ms through the
-- index). The text column stays as it was (provisioning's views and every reader use
-- it); `state_enum` is the same state as the enum, to filter on.
create or replace view journal.lane_entries as
select e.id, e.lane, e.key, e.kind, e.payload, e.state::text as state, e.attempts,
       e.not_before, e.created_at, e.created_by, e.taken_at, e.finished_at, e.errors,
       e.errors -> -1 ->> 'code' as last_error_code,
       e.errors -> -1 ->> 'message' as last_error_message,
       (e.errors -> -1 ->> 'at')::timestamptz as last_error_at,
       e.state as state_enum
from journal.entries e;
