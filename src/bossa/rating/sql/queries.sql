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
from rating.subscriptions s
join ledger.billing_accounts a on a.id = s.account_id
where s.msisdn = any(%(numbers)s)

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

-- name: add_allowance
-- Count a batch's included seconds into the accounts' months.
insert into rating.allowance_usage (account_id, month, seconds)
select * from unnest(%(accounts)s::text[], %(months)s::text[], %(seconds)s::bigint[])
on conflict (account_id, month) do update
set seconds = rating.allowance_usage.seconds + excluded.seconds

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

-- name: add_usage
-- A batch's charges into the ledger, per account and day, for the bill run.
select ledger.add_usage(%(accounts)s::text[], %(days)s::timestamptz[], %(charges)s::bigint[],
                        %(reference)s) as added
