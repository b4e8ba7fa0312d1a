-- Named queries of rating.

-- name: lock_pipeline
-- One rating transaction at a time per pipeline instance: allowances are read, used and
-- written back by one batch before the next reads them.
select pg_advisory_xact_lock(hashtext('bossa.rating.pipeline'), %(instance)s)

-- name: batch_by_sha
-- A batch with this content, if it was rated already.
select id, source, records, rated, suspended, malformed, created_at
from rating.batches where sha256 = %(sha256)s

-- name: add_batch
-- A new batch, before its records are written.
insert into rating.batches (source, sha256, records, created_by)
values (%(source)s, %(sha256)s, %(records)s, %(actor)s)
returning id

-- name: finish_batch
-- A batch's counts once its records are written.
update rating.batches set rated = %(rated)s, suspended = %(suspended)s,
       malformed = %(malformed)s
where id = %(id)s

-- name: tariffs
-- Every tariff version with its zones and rates, for the pipeline's memory.
select t.id, t.product_code, t.valid_from, t.valid_to, t.increment_s, t.min_charge,
       t.discount_percent, t.allowance_seconds,
       (select coalesce(jsonb_agg(jsonb_build_array(z.prefix, z.zone, z.included)), '[]')
        from rating.tariff_zones z where z.tariff_id = t.id) as zones,
       (select coalesce(jsonb_agg(jsonb_build_array(r.zone, r.band, r.rate)), '[]')
        from rating.tariff_rates r where r.tariff_id = t.id) as rates
from rating.tariffs t
order by t.product_code, t.valid_from

-- name: open_tariff
-- The product's version that has no end yet, if any, locked to close it.
select id, valid_from from rating.tariffs
where product_code = %(product)s and valid_to is null
for update

-- name: later_tariff
-- A version of the product starting on or after this date (a new one may not go under it).
select valid_from from rating.tariffs
where product_code = %(product)s and valid_from >= %(valid_from)s
limit 1

-- name: close_tariff
-- End a version the day a newer one starts.
update rating.tariffs set valid_to = %(valid_to)s where id = %(id)s

-- name: add_tariff
-- A tariff version's head.
insert into rating.tariffs (product_code, valid_from, valid_to, increment_s, min_charge,
                            discount_percent, allowance_seconds, created_by)
values (%(product_code)s, %(valid_from)s, %(valid_to)s, %(increment)s, %(min_charge)s,
        %(discount_percent)s, %(allowance_seconds)s, %(actor)s)
returning id

-- name: add_zone
-- One destination prefix of a tariff version.
insert into rating.tariff_zones (tariff_id, prefix, zone, included) values (%s, %s, %s, %s)

-- name: add_rate
-- One zone's rate in one band of a tariff version.
insert into rating.tariff_rates (tariff_id, zone, band, rate) values (%s, %s, %s, %s)

-- name: subscriptions_of
-- The subscription histories of these numbers (S10: loaded on first usage), of accounts
-- the ledger has: usage of any other stays in suspense as of an unknown account.
select s.msisdn, s.account_id, s.product_code, s.valid_from, s.valid_to
from unnest(%(numbers)s::text[]) as n(msisdn)
join rating.subscriptions s using (msisdn)
join ledger.billing_accounts a on a.id = s.account_id

-- name: end_subscription
-- A number's open subscription ends where its next one starts.
update rating.subscriptions set valid_to = %(at)s
where msisdn = %(msisdn)s and valid_to is null and valid_from < %(at)s

-- name: put_subscription
-- A number's subscription from a moment (a product purchase or change).
insert into rating.subscriptions (msisdn, valid_from, valid_to, account_id, product_code)
values (%(msisdn)s, %(at)s, null, %(account_id)s, %(product_code)s)
on conflict (msisdn, valid_from) do update
set account_id = excluded.account_id, product_code = excluded.product_code

-- name: end_subscription_of
-- A cancelled product: the number's open subscription to it ends.
update rating.subscriptions set valid_to = %(at)s
where msisdn = %(msisdn)s and product_code = %(product_code)s and valid_to is null
  and valid_from < %(at)s
returning msisdn

-- name: allowance_of
-- Allowance seconds used so far by these accounts in these months.
select u.account_id, u.month, u.seconds
from rating.allowance_usage u
join unnest(%(accounts)s::text[], %(months)s::text[]) as k(account_id, month)
  using (account_id, month)

-- name: stage_table
-- A transaction-local copy target, to find which record keys were rated before.
create temp table rating_incoming (record_key text) on commit drop

-- name: already_rated
-- Record keys of the incoming batch that are rated already.
select i.record_key from rating_incoming i join rating.rated_usage r using (record_key)

-- name: unsuspend
-- Records that rated now leave suspense.
delete from rating.suspense s using rating_incoming i where s.record_key = i.record_key

-- name: suspense_stage
-- A transaction-local copy target for suspended records.
create temp table rating_suspended (like rating.suspense including defaults) on commit drop

-- name: suspend
-- Suspended records: new ones are added; one suspended before counts another attempt.
insert into rating.suspense
select * from rating_suspended
on conflict (record_key) do update
set reason = excluded.reason, batch_id = excluded.batch_id,
    suspended_at = excluded.suspended_at, attempts = rating.suspense.attempts + 1

-- name: suspended
-- Suspended records, optionally of one reason, oldest first, a page at a time.
select record_key, msisdn, destination, started_at, duration, reason, attempts
from rating.suspense
where (%(reason)s::text is null or reason = %(reason)s)
  and record_key > %(after)s
order by record_key
limit %(limit)s

-- name: suspense_counts
-- Suspended records by reason.
select reason, count(*) as records from rating.suspense group by reason order by reason

-- name: usage_of
-- An account's rated usage in a time range, by start.
select record_key, msisdn, destination, product_code, zone, started_at, duration, billed,
       free, charge
from rating.rated_usage
where account_id = %(account)s and started_at >= %(start)s and started_at < %(end)s
order by started_at, record_key
limit %(limit)s

-- name: gauges
-- What an operator watches: suspended records and rated usage.
select (select count(*) from rating.suspense) as suspended,
       (select count(*) from rating.batches) as batches

-- name: unsuspend_rated
-- Suspended records that are rated now leave suspense: a record is charged once, and what
-- is charged does not wait in suspense as well. The batch's rated rows (by the BRIN index
-- on batch id) are looked up in suspense by key, so the cost follows the batch, not the
-- size of suspense or of rated usage (tests/rating/test_query_plans.py).
delete from rating.suspense s
using rating.rated_usage r
where r.batch_id = %(batch)s and s.record_key = r.record_key

-- name: unsuspend_rated_before
-- Records the batch suspended whose key an earlier batch rated (the same record again,
-- say while its account is being billed): charged already, they do not wait in suspense.
delete from rating.suspense s
using rating.rated_usage r
where s.batch_id = %(batch)s and r.record_key = s.record_key

-- name: lock_changes
-- Writers of rating.changes hold this until they commit: the sequence order of the rows
-- is then their commit order.
select pg_advisory_xact_lock(hashtext('bossa.rating.changes'))

-- name: read_lock_changes
-- A reader waits for writers in flight, so no row below the highest it sees can appear later.
select pg_advisory_lock_shared(hashtext('bossa.rating.changes'))

-- name: read_unlock_changes
select pg_advisory_unlock_shared(hashtext('bossa.rating.changes'))

-- name: add_changes
-- Numbers whose subscriptions changed, or accounts whose billing hold changed.
insert into rating.changes (msisdn, account_id)
select * from unnest(%(numbers)s::text[], %(accounts)s::text[])

-- name: changes_since
-- What changed after the pipeline last looked.
select coalesce(max(seq), %(seq)s) as seq,
       coalesce(array_agg(distinct msisdn) filter (where msisdn is not null), '{}') as numbers,
       count(account_id) as accounts
from rating.changes where seq > %(seq)s

-- name: last_change
select coalesce(max(seq), 0) as seq from rating.changes

-- name: purge_changes
-- Changes a day old: a pipeline that has not looked for a day starts its memory afresh.
delete from rating.changes where changed_at < now() - interval '1 day'

-- name: holds
-- Accounts being billed now (S14).
select account_id from rating.billing_holds order by account_id

-- name: add_holds
insert into rating.billing_holds (account_id, run)
select a, %(run)s from unnest(%(accounts)s::text[]) a
on conflict (account_id) do update set since = now(), run = excluded.run

-- name: remove_holds
delete from rating.billing_holds where account_id = any(%(accounts)s)

-- name: allowance_version
select coalesce((select allowance_version from rating.pipeline_state
                 where instance = %(instance)s), 0) as version

-- name: bump_allowance_version
-- Allowance counters changed: a pipeline whose memory holds an older version reloads them.
insert into rating.pipeline_state (instance, allowance_version) values (%(instance)s, 1)
on conflict (instance) do update
set allowance_version = rating.pipeline_state.allowance_version + 1
returning allowance_version as version

-- name: recycle_table
create temp table rating_recycle (record_key text, msisdn text, destination text,
                                  started_at timestamp, duration integer) on commit drop

-- name: recycle_stage
-- Suspended records to recycle, into a transaction-local table the engine reads them from.
insert into rating_recycle
select record_key, msisdn, destination, started_at, duration
from rating.suspense s
where (%(reason)s::text is null or s.reason = %(reason)s)
  and (%(batch)s::bigint is null or s.batch_id = %(batch)s)
  and (%(source)s::text is null or s.batch_id in (select b.id from rating.batches b
                                               where b.source = %(source)s))
  and (%(account)s::text is null or s.account_id = %(account)s
       or s.msisdn in (select x.msisdn from rating.subscriptions x
                       where x.account_id = %(account)s))
  and (not %(fixed)s or case s.reason
    -- the cause of each reason, and whether it is gone
    when 'unknown_account' then exists (
        select 1 from rating.subscriptions x
        join ledger.billing_accounts a on a.id = x.account_id
        where x.msisdn = s.msisdn and s.started_at >= x.valid_from
          and (x.valid_to is null or s.started_at < x.valid_to))
    when 'no_tariff' then exists (
        select 1 from rating.subscriptions x
        join rating.tariffs t on t.product_code = x.product_code
        where x.msisdn = s.msisdn and s.started_at >= x.valid_from
          and (x.valid_to is null or s.started_at < x.valid_to)
          and s.started_at::date >= t.valid_from
          and (t.valid_to is null or s.started_at::date < t.valid_to))
    when 'no_zone' then exists (
        select 1 from rating.subscriptions x
        join rating.tariffs t on t.product_code = x.product_code
        join rating.tariff_zones z on z.tariff_id = t.id
        where x.msisdn = s.msisdn and s.started_at >= x.valid_from
          and (x.valid_to is null or s.started_at < x.valid_to)
          and s.started_at::date >= t.valid_from
          and (t.valid_to is null or s.started_at::date < t.valid_to)
          and left(s.destination, length(z.prefix)) = z.prefix)
    when 'billing_in_progress' then not exists (
        select 1 from rating.billing_holds h where h.account_id = s.account_id)
    else false end)
order by s.record_key
limit %(limit)s

-- name: rerate_table
create temp table rating_rerate (record_key text, msisdn text, destination text,
                                 started_at timestamp, duration integer, account_id text,
                                 batch_id bigint, month text, allowance_used integer,
                                 charge bigint) on commit drop

-- name: rerate_stage
-- A period's rated usage to rate again, into a transaction-local table (locked: nothing
-- else rates these records meanwhile, since the pipeline lock is held).
insert into rating_rerate
select record_key, msisdn, destination, started_at, duration, account_id, batch_id,
       to_char(started_at, 'YYYY-MM') as month, allowance_used, charge
from rating.rated_usage
where started_at >= %(start)s and started_at < %(end)s
  and (%(account)s::text is null or account_id = %(account)s)

-- name: rerate_scope
-- The ledger rows the period's usage was booked in: (account, batch reference).
select array_agg(account_id) as accounts, array_agg('rating-batch:' || batch_id) as refs
from (select distinct account_id, batch_id from rating_rerate) k

-- name: staged_charge
select coalesce(sum(charge), 0)::bigint as charge from rating_rerate

-- name: rerate_give_back
-- The allowance the old rating used is given back before rating again.
update rating.allowance_usage u set seconds = greatest(0, u.seconds - g.seconds)
from (select account_id, month, sum(allowance_used) as seconds from rating_rerate
      group by 1, 2) g
where u.account_id = g.account_id and u.month = g.month

-- name: rerate_remove
delete from rating.rated_usage r using rating_rerate x where r.record_key = x.record_key

-- name: remove_usage
select ledger.remove_usage(%(accounts)s::text[], %(references)s::text[],
                           %(start)s::timestamp::timestamptz, %(end)s::timestamp::timestamptz)
       as removed

-- name: add_audit
insert into rating.audit (actor, action, detail) values (%(actor)s, %(action)s, %(detail)s)
returning id


-- name: tariff_version
-- The newest tariff version's id: it moves whenever a version is added (and the one it
-- closes changes in the same transaction), so a pipeline reloads tariffs only then.
select coalesce(max(id), 0) as version from rating.tariffs

-- name: numbers_table
-- The numbers a batch needs the histories of (S10), copied in by the pipeline.
create temp table rating_numbers (msisdn text) on commit drop

-- name: keys_table
-- The (account, month) allowance counters a batch needs, copied in by the pipeline.
create temp table rating_keys (account_id text, month text) on commit drop

-- name: rated_records
-- Rated usage records by their keys (the tour shows what a call was rated with).
select record_key, batch_id, account_id, msisdn, product_code, zone, started_at, duration,
       billed, free, charge
from rating.rated_usage
where record_key = any(%(keys)s)
order by started_at, record_key

-- name: batch_usage_table
-- A batch's included seconds per (account, month), copied in by the pipeline.
create temp table rating_batch_usage (account_id text, month text, seconds bigint)
on commit drop

-- name: add_batch_usage
-- Count the copied batch's included seconds into the accounts' months.
insert into rating.allowance_usage (account_id, month, seconds)
select account_id, month, seconds from rating_batch_usage
on conflict (account_id, month) do update
set seconds = rating.allowance_usage.seconds + excluded.seconds

-- name: daily_table
-- A batch's charges per account and day, copied in by the pipeline.
create temp table rating_daily (account_id text, day timestamp, charge bigint) on commit drop

-- name: add_daily_usage
-- The copied batch's charges into the ledger, in account and day order, for the bill run.
select ledger.add_usage(array_agg(account_id order by account_id, day),
                        array_agg(day::timestamptz order by account_id, day),
                        array_agg(charge order by account_id, day),
                        %(reference)s) as added
from rating_daily
