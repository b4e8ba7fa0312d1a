-- Lanes are declared, and owned by the module that consumes them. Until now a row in
-- journal.lanes appeared only when someone set a lane's settings, so a typo in
-- `bossa journal lane AAAX --set ...` silently made a new lane. Now a row is a
-- declaration: operator commands refuse a lane without one, and the generic operator
-- routes refuse to create or rewrite entries on a lane another module owns.

alter table journal.lanes
    add column owner      text        not null default 'journal'
        check (owner ~ '^[a-z][a-z0-9_]*$'),
    add column created_at timestamptz not null default now(),
    add column created_by text        not null default current_user;

-- Every lane already in use is declared: its owner is the module its name starts with
-- (`provisioning.AAA`), or the generic journal's for an operator's own lanes.
insert into journal.lanes (lane, created_at, created_by, updated_at, updated_by)
select lane, min(created_at), 'journal/0003_lane_registry', min(created_at),
       'journal/0003_lane_registry'
from journal.entries
group by lane
on conflict (lane) do nothing;

update journal.lanes
set owner = case
        when split_part(lane, '.', 1) in (
            'provisioning', 'billing', 'sync', 'rating', 'alerts', 'partners', 'mediation'
        ) and lane like '%.%' then split_part(lane, '.', 1)
        else 'journal'
    end;

-- Every declaration names its owner from now on.
alter table journal.lanes alter column owner drop default;

-- published: journal.declare_lane
-- Declare a lane for the module that consumes it; idempotent. A lane already declared
-- for another module is refused: two modules consuming one lane would each take the
-- other's entries.
create function journal.declare_lane(p_lane text, p_owner text, p_actor text default null)
returns void
language plpgsql as $$
declare
    v_owner text;
begin
    insert into journal.lanes (lane, owner, created_by, updated_by)
    values (p_lane, p_owner, coalesce(p_actor, current_user), coalesce(p_actor, current_user))
    on conflict (lane) do nothing;
    select l.owner into v_owner from journal.lanes l where l.lane = p_lane;
    if v_owner is distinct from p_owner then
        raise exception 'lane % is owned by %, not %', p_lane, v_owner, p_owner
            using errcode = 'BJ001', hint = v_owner;
    end if;
end
$$;

-- published: journal.lane_entries
-- The journal's entries as other modules may read them (never journal.entries itself):
-- the columns are a stable interface, the table's layout is the journal's own.
create view journal.lane_entries as
select e.id, e.lane, e.key, e.kind, e.payload, e.state::text as state, e.attempts,
       e.not_before, e.created_at, e.created_by, e.taken_at, e.finished_at, e.errors,
       e.errors -> -1 ->> 'code' as last_error_code,
       e.errors -> -1 ->> 'message' as last_error_message,
       (e.errors -> -1 ->> 'at')::timestamptz as last_error_at
from journal.entries e;
