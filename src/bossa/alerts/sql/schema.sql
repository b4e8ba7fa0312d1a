-- The whole current schema of alerts; migrations/ are the steps that build it.
create schema alerts;

-- Who subscribed to missed-call alerts (message 2), in which language.
create table alerts.subscribers (
    msisdn      text        primary key check (msisdn ~ '^[1-9][0-9]{6,14}$'),
    lang        text        not null default 'en' check (lang in ('en', 'zh', 'ko')),
    created_at  timestamptz not null default now(),
    created_by  text        not null default current_user
);

-- Every missed call, once: `id` is assigned at intake (and kept in the spool while the
-- database is down), `call_ref` is the intake's idempotency key (SIP transaction).
create table alerts.missed_calls (
    id          uuid        primary key,
    call_ref    text        not null unique,
    caller      text        not null check (caller ~ '^[1-9][0-9]{6,14}$'),
    callee      text        not null check (callee ~ '^[1-9][0-9]{6,14}$'),
    reason      text        not null
                            check (reason in ('busy', 'no-answer', 'unreachable',
                                              'unconditional', 'other')),
    called_at   timestamptz not null,
    recorded_at timestamptz not null default now(),
    via         text        not null check (via in ('sip', 'http')),
    -- true when written from the spool after an outage
    spooled     boolean     not null default false,
    -- the notice that told the callee (null: not yet, or nobody to tell)
    notice_id   bigint
);
create index missed_calls_callee on alerts.missed_calls (callee, called_at);

-- Calls waiting for their window to close: one row per (callee, caller).
create table alerts.pending (
    callee      text        not null,
    caller      text        not null,
    calls       integer     not null check (calls > 0),
    first_at    timestamptz not null,
    last_at     timestamptz not null,
    due_at      timestamptz not null,
    primary key (callee, caller)
);
create index pending_due on alerts.pending (due_at);

-- Each SMS decided: its kind (1 outage, 2 registered, 3 trial), what it said, and what
-- the SMS centre answered.
create table alerts.notices (
    id           bigint      generated always as identity primary key,
    kind         smallint    not null check (kind in (1, 2, 3)),
    callee       text        not null,
    caller       text        not null,
    calls        integer     not null check (calls > 0),
    last_at      timestamptz not null,
    text         text        not null,
    created_at   timestamptz not null default now(),
    submitted_at timestamptz,
    smsc_ids     text[],
    delivered_at timestamptz,
    receipt_stat text,
    -- a message 1 sent during an outage: its id in the spool, so replay adds it once
    spool_ref    uuid        unique
);
create index notices_callee on alerts.notices (callee, created_at);

-- The keys a delivery receipt is matched by (see models.message_id_keys).
create table alerts.smsc_ids (
    key         text        not null,
    notice_id   bigint      not null references alerts.notices (id),
    primary key (key, notice_id)
);

-- A message 3's reply code (M4): the callee may answer it for message 2.
create table alerts.offers (
    callee      text        not null,
    code        text        not null check (code ~ '^[0-9]{6}$'),
    notice_id   bigint      not null references alerts.notices (id),
    expires_at  timestamptz not null,
    attempts    integer     not null default 0,
    used_at     timestamptz,
    primary key (callee, code)
);

-- The trial set (M5): number ranges (prefixes) and how many users it may hold.
create table alerts.trial_ranges (
    prefix      text        primary key check (prefix ~ '^[1-9][0-9]{0,14}$'),
    created_at  timestamptz not null default now(),
    created_by  text        not null default current_user
);
create table alerts.trial_quota (
    one         boolean     primary key default true check (one),
    quota       integer     not null default 0 check (quota between 0 and 100000000),
    changed_at  timestamptz not null default now(),
    changed_by  text        not null default current_user
);
insert into alerts.trial_quota default values;
create table alerts.trial_members (
    msisdn      text        primary key,
    joined_at   timestamptz not null default now()
);

select journal.declare_lane('alerts.sms', 'alerts');
