-- Named queries of alerts.

-- name: health
-- The database monitor's probe.
select 1 as ok

-- name: insert_missed_call
-- A missed call, unless its id or its intake reference is recorded already (a SIP
-- retransmission, a spool replayed twice): then nothing, and no row comes back.
insert into alerts.missed_calls
    (id, call_ref, caller, callee, reason, called_at, via, spooled, notice_id)
values (%(id)s, %(call_ref)s, %(caller)s, %(callee)s, %(reason)s, %(called_at)s, %(via)s,
        %(spooled)s, %(notice_id)s)
on conflict do nothing
returning id

-- name: add_pending
-- Count a call into its (callee, caller) window, opening the window if there is none.
insert into alerts.pending as p (callee, caller, calls, first_at, last_at, due_at)
values (%(callee)s, %(caller)s, 1, %(called_at)s, %(called_at)s,
        now() + make_interval(secs => %(window_s)s))
on conflict (callee, caller) do update
set calls = p.calls + 1, last_at = greatest(p.last_at, excluded.last_at)

-- name: take_due
-- Windows that have closed, removed as they are taken (the caller's transaction decides
-- their notices; a rollback puts them back).
delete from alerts.pending
where (callee, caller) in (
    select callee, caller from alerts.pending
    where due_at <= now()
    order by due_at
    limit %(limit)s
    for update skip locked
)
returning callee, caller, calls, first_at, last_at

-- name: registry
-- Every registered subscriber, for the local copy used while the database is down.
select msisdn, lang from alerts.subscribers order by msisdn

-- name: add_subscriber
-- Register (or change the language of) a subscriber.
insert into alerts.subscribers as s (msisdn, lang, created_by)
values (%(msisdn)s, %(lang)s, %(actor)s)
on conflict (msisdn) do update set lang = excluded.lang
returning msisdn, lang, created_at

-- name: remove_subscriber
-- Unregister a subscriber.
delete from alerts.subscribers where msisdn = %(msisdn)s returning msisdn

-- name: trial_ranges
-- The trial set's number ranges.
select prefix from alerts.trial_ranges order by prefix

-- name: add_trial_range
-- A number range (prefix) of the trial set.
insert into alerts.trial_ranges (prefix, created_by) values (%(prefix)s, %(actor)s)
on conflict do nothing

-- name: remove_trial_range
-- Drop a number range from the trial set.
delete from alerts.trial_ranges where prefix = %(prefix)s returning prefix

-- name: trial_quota
-- The trial set's user quota and how many users it holds.
select q.quota, q.changed_at, q.changed_by,
       (select count(*) from alerts.trial_members) as members
from alerts.trial_quota q

-- name: set_trial_quota
-- Change the user quota (members beyond it stay; no new ones join).
update alerts.trial_quota set quota = %(quota)s, changed_at = now(), changed_by = %(actor)s

-- name: lock_trial
-- Serialises joining the trial set, so that the quota holds under concurrent windows.
select pg_advisory_xact_lock(hashtext('bossa.alerts.trial'))

-- name: join_trial
-- The callee is a member, or becomes one while the quota has room; no row: neither.
with existing as (
    select msisdn from alerts.trial_members where msisdn = %(msisdn)s
), joined as (
    insert into alerts.trial_members (msisdn)
    select %(msisdn)s
    where not exists (select 1 from existing)
      and (select count(*) from alerts.trial_members)
          < (select quota from alerts.trial_quota)
    returning msisdn
)
select msisdn from existing union all select msisdn from joined

-- name: insert_notice
-- An SMS decided.
insert into alerts.notices (kind, callee, caller, calls, last_at, text, created_at)
values (%(kind)s, %(callee)s, %(caller)s, %(calls)s, %(last_at)s, %(text)s,
        coalesce(%(created_at)s, now()))
returning id

-- name: link_calls_by_id
-- Calls told by a notice sent during an outage (from the spool).
update alerts.missed_calls set notice_id = %(notice_id)s where id = any(%(ids)s)

-- name: mark_submitted
-- The SMS centre accepted the notice's parts.
update alerts.notices set submitted_at = coalesce(submitted_at, now()), smsc_ids = %(ids)s
where id = %(notice_id)s

-- name: add_smsc_key
-- A key a receipt may name the notice by.
insert into alerts.smsc_ids (key, notice_id) values (%(key)s, %(notice_id)s)
on conflict do nothing

-- name: notice_by_keys
-- The notice a receipt names, by the first of its keys that is known.
select s.notice_id from alerts.smsc_ids s
where s.key = any(%(keys)s)
order by array_position(%(keys)s, s.key), s.notice_id desc
limit 1

-- name: mark_delivered
-- A delivery receipt for a notice.
update alerts.notices
set delivered_at = coalesce(delivered_at, now()), receipt_stat = %(stat)s
where id = %(notice_id)s
returning id

-- name: add_offer
-- A message 3's reply code.
insert into alerts.offers (callee, code, notice_id, expires_at)
values (%(callee)s, %(code)s, %(notice_id)s, now() + make_interval(hours => %(hours)s))
on conflict do nothing
returning code

-- name: open_offers
-- A callee's offers that may still be answered, newest first, locked for the check.
select o.code, o.notice_id, o.attempts, n.caller, n.calls, n.last_at
from alerts.offers o join alerts.notices n on n.id = o.notice_id
where o.callee = %(callee)s and o.used_at is null and o.expires_at > now()
order by o.expires_at desc
for update of o

-- name: use_offer
-- A verified reply: the offer is spent.
update alerts.offers set used_at = now() where callee = %(callee)s and code = %(code)s

-- name: count_attempt
-- A wrong code against a callee's open offers.
update alerts.offers set attempts = attempts + 1
where callee = %(callee)s and used_at is null and expires_at > now()

-- name: close_exhausted
-- Offers with too many wrong codes can no longer be answered.
update alerts.offers set expires_at = now()
where callee = %(callee)s and used_at is null and attempts >= %(attempts)s

-- name: calls_of
-- A callee's missed calls, newest first.
select id, caller, callee, reason, called_at, via, spooled, notice_id
from alerts.missed_calls where callee = %(callee)s
order by called_at desc limit %(limit)s

-- name: notices_of
-- A callee's notices, newest first.
select id, kind, callee, caller, calls, last_at, text, created_at, submitted_at,
       delivered_at, receipt_stat
from alerts.notices where callee = %(callee)s
order by id desc limit %(limit)s

-- name: insert_outage_notice
-- A message 1 sent while the database was down, from the spool: once, whatever the number
-- of replays (the spool's id of the notice is unique).
insert into alerts.notices
    (kind, callee, caller, calls, last_at, text, created_at, submitted_at, smsc_ids, spool_ref)
values (1, %(callee)s, %(caller)s, %(calls)s, %(last_at)s, %(text)s, %(created_at)s,
        %(created_at)s, %(ids)s, %(ref)s)
on conflict (spool_ref) do update set spool_ref = excluded.spool_ref
returning id

-- name: insert_missed_calls
-- A burst of missed calls in one statement; those recorded already (by id or intake
-- reference, also twice in the burst) are skipped. The rows inserted come back.
insert into alerts.missed_calls (id, call_ref, caller, callee, reason, called_at, via)
select * from unnest(%(ids)s::uuid[], %(refs)s::text[], %(callers)s::text[],
                     %(callees)s::text[], %(reasons)s::text[], %(ats)s::timestamptz[],
                     %(vias)s::text[])
on conflict do nothing
returning id, caller, callee, called_at

-- name: add_pending_many
-- Count a burst's calls into their windows, grouped first (one row per window).
insert into alerts.pending as p (callee, caller, calls, first_at, last_at, due_at)
select callee, caller, count(*), min(called_at), max(called_at),
       now() + make_interval(secs => %(window_s)s)
from unnest(%(callees)s::text[], %(callers)s::text[], %(ats)s::timestamptz[])
     as t(callee, caller, called_at)
group by callee, caller
on conflict (callee, caller) do update
set calls = p.calls + excluded.calls, last_at = greatest(p.last_at, excluded.last_at)

-- name: subscriber_langs
-- The languages of those of these callees who are registered.
select msisdn, lang from alerts.subscribers where msisdn = any(%(msisdns)s)

-- name: insert_notices
-- A batch of notices; ids come back with their (callee, caller), unique in a batch.
insert into alerts.notices (kind, callee, caller, calls, last_at, text)
select * from unnest(%(kinds)s::smallint[], %(callees)s::text[], %(callers)s::text[],
                     %(calls)s::integer[], %(last_ats)s::timestamptz[], %(texts)s::text[])
returning id, callee, caller

-- name: link_calls_many
-- Each notice's window's calls are told by it.
update alerts.missed_calls m set notice_id = t.notice_id
from unnest(%(ids)s::bigint[], %(callees)s::text[], %(callers)s::text[])
     as t(notice_id, callee, caller)
where m.callee = t.callee and m.caller = t.caller and m.notice_id is null

-- name: mark_submitted_many
-- The SMS centre accepted these notices (one row each, ids as a JSON array of strings):
-- the SMS lane's ack of a whole batch in one statement.
update alerts.notices n
set submitted_at = coalesce(n.submitted_at, now()), smsc_ids = r.ids
from jsonb_to_recordset(%(rows)s::jsonb) as r(notice_id bigint, ids text[])
where n.id = r.notice_id

-- name: add_smsc_keys
-- The keys receipts may name these notices by, for a batch.
insert into alerts.smsc_ids (key, notice_id)
select * from unnest(%(keys)s::text[], %(notice_ids)s::bigint[])
on conflict do nothing

-- name: mark_delivered_many
-- Delivery receipts for a batch of notices; the ids that matched come back.
update alerts.notices n
set delivered_at = coalesce(n.delivered_at, now()), receipt_stat = r.stat
from (select distinct on (id) id, stat
      from unnest(%(notice_ids)s::bigint[], %(stats)s::text[]) as t(id, stat)) as r
where n.id = r.id
returning n.id

-- name: insert_spooled_calls
-- A replayed spool's missed calls in one statement; those recorded already (an earlier
-- replay, or committed by a transaction that was in doubt) are skipped.
insert into alerts.missed_calls (id, call_ref, caller, callee, reason, called_at, via, spooled)
select *, true from unnest(%(ids)s::uuid[], %(refs)s::text[], %(callers)s::text[],
                           %(callees)s::text[], %(reasons)s::text[], %(ats)s::timestamptz[],
                           %(vias)s::text[])
on conflict do nothing
returning id, caller, callee, called_at

-- name: insert_outage_notices
-- A replayed spool's messages 1 (their spool refs unique in the batch): each once, whatever
-- the number of replays; every notice's id comes back with its ref.
insert into alerts.notices
    (kind, callee, caller, calls, last_at, text, created_at, submitted_at, smsc_ids, spool_ref)
select 1, r.callee, r.caller, r.calls, r.last_at, r.text, r.created_at, r.created_at, r.ids,
       r.ref
from jsonb_to_recordset(%(rows)s::jsonb) as r(callee text, caller text, calls integer,
     last_at timestamptz, text text, created_at timestamptz, ids text[], ref uuid)
on conflict (spool_ref) do update set spool_ref = excluded.spool_ref
returning id, spool_ref

-- name: link_calls_to_notices
-- Calls told by messages 1 of a replayed spool: (call id, notice id) pairs.
update alerts.missed_calls m set notice_id = t.notice_id
from unnest(%(ids)s::uuid[], %(notice_ids)s::bigint[]) as t(id, notice_id)
where m.id = t.id

-- name: notices_by_receipt_keys
-- The notice each of a batch of receipts names: per receipt (n), the first of its keys
-- (by pos) that is known.
select distinct on (t.n) t.n, s.notice_id
from unnest(%(ns)s::integer[], %(keys)s::text[], %(pos)s::integer[]) as t(n, key, pos)
join alerts.smsc_ids s on s.key = t.key
order by t.n, t.pos, s.notice_id desc
