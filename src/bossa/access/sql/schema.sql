-- The whole current schema of access control; migrations/ are the steps that build it.
create schema access;

-- API tokens. The secret is never stored: only its argon2 hash. A revoked or expired token
-- keeps its row, so audits that name it still resolve.
create table access.tokens (
    id            text        primary key check (id ~ '^[0-9a-f]{16}$'),
    name          text        not null check (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$'),
    role          text        not null check (role in ('admin', 'provisioning-operator',
                                  'billing-operator', 'front-office', 'read-only', 'partner')),
    secret_hash   text        not null,
    created_at    timestamptz not null default now(),
    created_by    text        not null,
    expires_at    timestamptz,
    revoked_at    timestamptz,
    revoked_by    text,
    last_used_at  timestamptz
);
-- One live token per name, so "revoke alice" means one thing.
create unique index tokens_live_name on access.tokens (name) where revoked_at is null;
