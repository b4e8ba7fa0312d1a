-- name: create_token
-- A new token; the caller has hashed its secret.
insert into access.tokens (id, name, role, secret_hash, created_by, expires_at)
values (%(id)s, %(name)s, %(role)s, %(secret_hash)s, %(created_by)s, %(expires_at)s)
returning id, name, role, created_at, created_by, expires_at, revoked_at, revoked_by, last_used_at

-- name: token_for_auth
-- What authentication needs of a token, read on every request so revocation is immediate.
select id, name, role, secret_hash, expires_at, revoked_at,
       expires_at is not null and expires_at <= now() as expired,
       last_used_at is not null and last_used_at >= now() - interval '1 minute' as used_lately
from access.tokens
where id = %(id)s

-- name: live_tokens
-- Which of these tokens are live now (not revoked, not expired): read in the transaction
-- of a change made for a deferred principal, so a revocation committed before it counts.
select id from access.tokens
where id = any(%(ids)s) and revoked_at is null and (expires_at is null or expires_at > now())

-- name: touch_token
-- Record use, at most once a minute per token (a write per request would be wasteful).
update access.tokens set last_used_at = now()
where id = %(id)s and (last_used_at is null or last_used_at < now() - interval '1 minute')

-- name: tokens
-- Tokens, newest first; never the hash.
select id, name, role, created_at, created_by, expires_at, revoked_at, revoked_by, last_used_at
from access.tokens
where (%(include_revoked)s or revoked_at is null)
order by created_at desc, id
limit %(limit)s

-- name: revoke_token
-- Revoke a live token by id or by name.
update access.tokens set revoked_at = now(), revoked_by = %(actor)s
where revoked_at is null and (id = %(ref)s or name = %(ref)s)
returning id, name, role, created_at, created_by, expires_at, revoked_at, revoked_by, last_used_at
