-- The whole current schema of imports; migrations/ are the steps that build it.
-- Bulk import keeps here only what must survive the importing process: the job (which
-- file, how far it got) and the rows it rejected. The file's rows are staged in a
-- temporary table of the importing session, and good rows are written by the owning
-- module's published import function (customers.import_customers, ledger.import_accounts,
-- ...), never into another module's tables.
create schema imports;

create table imports.jobs (
    id              bigint      generated always as identity primary key,
    kind            text        not null
                                check (kind in ('customers', 'accounts', 'contracts', 'products')),
    -- The file's SHA-256: the same file, imported again, is this job (resumed, or done).
    sha256          text        not null check (sha256 ~ '^[0-9a-f]{64}$'),
    file_name       text        not null check (length(file_name) between 1 and 255),
    format          text        not null check (format in ('csv', 'jsonl')),
    all_or_nothing  boolean     not null,
    status          text        not null default 'running'
                                check (status in ('running', 'done', 'rejected', 'failed')),
    -- Data rows in the file, and the last line whose row is applied or rejected: a run
    -- after a kill starts after it. Moved in the same transaction as the rows it counts.
    rows            bigint      not null default 0 check (rows >= 0),
    position        bigint      not null default 0 check (position >= 0),
    applied         bigint      not null default 0 check (applied >= 0),
    rejected        bigint      not null default 0 check (rejected >= 0),
    last_error      text        check (length(last_error) <= 1000),
    created_at      timestamptz not null default now(),
    created_by      text        not null,
    updated_at      timestamptz not null default now(),
    finished_at     timestamptz,
    constraint jobs_file unique (kind, sha256)
);

-- A job's rejected rows: the error file is written from here, so a resumed run rewrites
-- it whole, rows rejected before the kill included.
create table imports.job_errors (
    job_id  bigint not null references imports.jobs (id),
    line    bigint not null check (line >= 1),
    field   text   not null check (length(field) <= 64),
    reason  text   not null check (length(reason) <= 1000),
    -- The row as it was read (as CSV), cut at a bound: a hostile field does not fill this.
    raw     text   not null check (length(raw) <= 4096),
    primary key (job_id, line)
);
