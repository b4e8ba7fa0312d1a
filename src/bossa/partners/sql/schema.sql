-- The whole current schema of the partner platform; migrations/ are the steps that build it.
create schema partners;

-- Content and service providers (CP/SP). A partner's API tokens (role partner) carry its
-- name: the open interface binds a caller to the partner of the same name.
create table partners.partners (
    name          text        primary key check (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$'),
    display_name  text        not null check (length(display_name) between 1 and 200),
    rate_per_s    integer     not null check (rate_per_s between 1 and 100000),
    daily_quota   bigint      not null check (daily_quota between 1 and 1000000000),
    created_at    timestamptz not null default now(),
    created_by    text        not null
);

-- Biz templates, one owner each; names are unique across partners.
create table partners.templates (
    name          text        primary key check (name ~ '^[a-z][a-z0-9-]{0,63}$'),
    partner       text        not null references partners.partners (name),
    rate_per_s    integer     not null check (rate_per_s between 1 and 100000),
    daily_quota   bigint      not null check (daily_quota between 1 and 1000000000),
    latest        integer     not null check (latest >= 1),
    created_at    timestamptz not null default now(),
    created_by    text        not null
);

-- Every version of a template, as checked on registration; a version never changes.
create table partners.template_versions (
    template      text        not null references partners.templates (name),
    version       integer     not null check (version >= 1),
    definition    jsonb       not null,
    created_at    timestamptz not null default now(),
    created_by    text        not null,
    primary key (template, version)
);

-- Runs counted against the daily quotas, per partner (template '*') and per template.
-- API processes reserve blocks of runs here, so the hot row is touched once per block.
create table partners.usage (
    partner       text        not null,
    template      text        not null,
    day           date        not null,
    reserved      bigint      not null check (reserved >= 0),
    primary key (partner, template, day)
);

create table partners.runs (
    id            bigint      generated always as identity primary key,
    partner       text        not null,
    template      text        not null,
    version       integer     not null,
    mode          text        not null check (mode in ('sync', 'async')),
    state         text        not null check (state in ('queued', 'done', 'failed')),
    input         jsonb       not null,
    output        jsonb,
    error         jsonb,
    actor         text        not null,
    created_at    timestamptz not null default now(),
    finished_at   timestamptz
);
create index runs_partner on partners.runs (partner, id);

-- Legacy systems the cooperation processor reaches (O3), by the role biz objects call.
create table partners.systems (
    role          text        primary key check (role ~ '^[a-z][a-z0-9_-]{0,31}$'),
    kind          text        not null check (kind in ('rest', 'soap', 'sql')),
    url           text        not null check (length(url) between 1 and 500),
    timeout_ms    integer     not null check (timeout_ms between 10 and 60000),
    statements    jsonb       not null default '{}',
    created_at    timestamptz not null default now(),
    created_by    text        not null
);

-- Billing policies (O5), versioned by the date they take effect.
create table partners.policies (
    id               bigint      generated always as identity primary key,
    partner          text        not null references partners.partners (name),
    template         text        not null check (template = '*' or template ~ '^[a-z][a-z0-9-]{0,63}$'),
    valid_from       date        not null,
    currency         char(3)     not null check (currency ~ '^[A-Z]{3}$'),
    per_use_fee      bigint      not null check (per_use_fee between 0 and 1000000000000000),
    per_unit_fee     bigint      not null check (per_unit_fee between 0 and 1000000000000000),
    revenue_share_bp integer     not null check (revenue_share_bp between 0 and 10000),
    created_at       timestamptz not null default now(),
    created_by       text        not null,
    unique (partner, template, valid_from)
);

-- Billing logs verified, standardised and rated: one per billable use, or a correction.
-- A file holds the records of its id range (mdr_files.after_id < id <= upto_id); files
-- written before ranges (after_id null) hold those whose file_seq is theirs. file_seq is
-- never set now, and never changes.
create table partners.billing_records (
    id            bigint      generated always as identity primary key,
    entry_id      bigint      not null,
    run_id        bigint      not null,
    kind          char(1)     not null check (kind in ('U', 'C')),
    partner       text        not null,
    template      text        not null,
    version       integer     not null,
    used_at       timestamptz not null,
    units         bigint      not null,
    charged       bigint      not null,
    fee           bigint      not null,
    share         bigint      not null,
    currency      char(3)     not null,
    policy_id     bigint      not null,
    collected_at  timestamptz not null default now(),
    file_seq      integer
);
-- One use record and at most one correction per run: a second billing log is a duplicate.
create unique index billing_records_use on partners.billing_records (run_id, kind);
create index billing_records_file on partners.billing_records (file_seq, id) where file_seq is not null;

-- Billing logs that failed verification, with the reason; they go to an error file.
create table partners.billing_rejects (
    id            bigint      generated always as identity primary key,
    entry_id      bigint      not null unique,
    payload       jsonb       not null,
    reason        text        not null,
    rejected_at   timestamptz not null default now(),
    error_file    text
);
create index billing_rejects_unfiled on partners.billing_rejects (id) where error_file is null;

-- The last MDR file sequence number handed out: allocated inside the transaction that
-- assigns the file's records, so a rolled-back file leaves no gap; filed_to, the last
-- record id in a file (the next file's records come after it).
create table partners.mdr_sequence (
    one           boolean     primary key default true check (one),
    last          integer     not null default 0 check (last >= 0),
    filed_to      bigint      not null default 0 check (filed_to >= 0)
);
insert into partners.mdr_sequence default values;

-- MDR files: written (rendered, waiting), then sent (the far side holds it under its
-- final name, checked). A file's content is rendered from its records and these columns.
create table partners.mdr_files (
    seq           integer     primary key check (seq >= 1),
    name          text        not null unique,
    sender        text        not null,
    recipient     text        not null,
    test          boolean     not null,
    created_at    timestamptz not null,
    records       integer     not null,
    units         bigint      not null,
    charged       bigint      not null,
    fee           bigint      not null,
    share         bigint      not null,
    checksum      text        not null,
    bytes         bigint      not null,
    state         text        not null default 'written' check (state in ('written', 'sent')),
    attempts      integer     not null default 0,
    last_error    text,
    sent_at       timestamptz,
    after_id      bigint,
    upto_id       bigint
);

select journal.declare_lane('partners.billing', 'partners');
select journal.declare_lane('partners.runs', 'partners');
