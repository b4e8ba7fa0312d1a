-- name: set_partner
-- Create a partner, or change its name for display and its limits.
insert into partners.partners (name, display_name, rate_per_s, daily_quota, created_by)
values (%(name)s, %(display_name)s, %(rate_per_s)s, %(daily_quota)s, %(actor)s)
on conflict (name) do update
set display_name = excluded.display_name, rate_per_s = excluded.rate_per_s,
    daily_quota = excluded.daily_quota
returning name, display_name, rate_per_s, daily_quota, created_at, created_by

-- name: partner
-- One partner.
select name, display_name, rate_per_s, daily_quota, created_at, created_by
from partners.partners where name = %(name)s

-- name: partners
-- Every partner, by name.
select name, display_name, rate_per_s, daily_quota, created_at, created_by
from partners.partners order by name limit %(limit)s

-- name: lock_template
-- A template's head, locked while a new version is registered.
select name, partner, latest from partners.templates where name = %(name)s for update

-- name: new_template
-- The first version's head.
insert into partners.templates (name, partner, rate_per_s, daily_quota, latest, created_by)
values (%(name)s, %(partner)s, %(rate_per_s)s, %(daily_quota)s, 1, %(actor)s)
on conflict (name) do nothing
returning latest

-- name: bump_template
-- A further version: the head moves, the limits are the new registration's.
update partners.templates
set latest = latest + 1, rate_per_s = %(rate_per_s)s, daily_quota = %(daily_quota)s
where name = %(name)s
returning latest

-- name: add_version
-- A template version, never changed afterwards.
insert into partners.template_versions (template, version, definition, created_by)
values (%(name)s, %(version)s, %(definition)s, %(actor)s)

-- name: template
-- A template at a version (the latest when version is null), with its owner's limits.
select t.name, t.partner, v.version, v.definition, t.rate_per_s, t.daily_quota,
       p.rate_per_s as partner_rate_per_s, p.daily_quota as partner_daily_quota,
       v.created_at, v.created_by
from partners.templates t
join partners.template_versions v
  on v.template = t.name and v.version = coalesce(%(version)s, t.latest)
join partners.partners p on p.name = t.partner
where t.name = %(name)s

-- name: templates
-- Templates at their latest version, of one partner or all.
select t.name, t.partner, v.version, v.definition, t.rate_per_s, t.daily_quota,
       v.created_at, v.created_by
from partners.templates t
join partners.template_versions v on v.template = t.name and v.version = t.latest
where %(partner)s::text is null or t.partner = %(partner)s
order by t.name
limit %(limit)s

-- name: reserve
-- Take `n` runs of a day's quota for one counter, or nothing when that would exceed it.
insert into partners.usage as u (partner, template, day, reserved)
select %(partner)s, %(template)s, %(day)s, %(n)s
where %(n)s <= %(quota)s
on conflict (partner, template, day) do update
set reserved = u.reserved + excluded.reserved
where u.reserved + excluded.reserved <= %(quota)s
returning reserved

-- name: usage
-- How many runs were reserved today against a counter.
select coalesce(sum(reserved), 0)::bigint as reserved from partners.usage
where partner = %(partner)s and template = %(template)s and day = %(day)s

-- name: add_run
-- A run: finished (sync) or queued (async).
insert into partners.runs
    (partner, template, version, mode, state, input, output, error, actor, finished_at)
values (%(partner)s, %(template)s, %(version)s, %(mode)s, %(state)s, %(input)s, %(output)s,
        %(error)s, %(actor)s, case when %(state)s = 'queued' then null else now() end)
returning id, partner, template, version, state, output, error, created_at, finished_at

-- name: add_runs
-- Finished sync runs of several requests at once (the group commit), in input order: ids
-- are handed out in the order rows are inserted, which is `ord`'s.
insert into partners.runs
    (partner, template, version, mode, state, input, output, error, actor, finished_at)
select u.partner, u.template, u.version, 'sync', u.state, u.input, u.output, u.error, u.actor,
       now()
from unnest(%(partners)s::text[], %(templates)s::text[], %(versions)s::int[],
            %(states)s::text[], %(inputs)s::jsonb[], %(outputs)s::jsonb[], %(errors)s::jsonb[],
            %(actors)s::text[])
     with ordinality as u(partner, template, version, state, input, output, error, actor, ord)
order by u.ord
returning id, partner, template, version, state, output, error, created_at, finished_at

-- name: finish_run
-- An asynchronous run's outcome, once.
update partners.runs
set state = %(state)s, output = %(output)s, error = %(error)s, finished_at = now()
where id = %(id)s and state = 'queued'
returning id, partner, template, version, state, output, error, created_at, finished_at

-- name: run
-- One run.
select id, partner, template, version, mode, state, input, output, error, created_at,
       finished_at
from partners.runs where id = %(id)s

-- name: set_system
-- Register or change a legacy system.
insert into partners.systems (role, kind, url, timeout_ms, statements, created_by)
values (%(role)s, %(kind)s, %(url)s, %(timeout_ms)s, %(statements)s, %(actor)s)
on conflict (role) do update
set kind = excluded.kind, url = excluded.url, timeout_ms = excluded.timeout_ms,
    statements = excluded.statements
returning role, kind, url, timeout_ms, statements

-- name: systems
-- Every legacy system, by role.
select role, kind, url, timeout_ms, statements from partners.systems order by role

-- name: add_policy
-- A billing policy version.
insert into partners.policies
    (partner, template, valid_from, currency, per_use_fee, per_unit_fee, revenue_share_bp,
     created_by)
values (%(partner)s, %(template)s, %(valid_from)s, %(currency)s, %(per_use_fee)s,
        %(per_unit_fee)s, %(revenue_share_bp)s, %(actor)s)
returning id, partner, template, valid_from, currency, per_use_fee, per_unit_fee,
          revenue_share_bp

-- name: policies
-- The policies of some partners (every version: the log's date picks one).
select id, partner, template, valid_from, currency, per_use_fee, per_unit_fee,
       revenue_share_bp
from partners.policies where partner = any(%(partners)s) order by id

-- name: add_records
-- Rated billing logs; a second log of a run (same kind) is not inserted.
insert into partners.billing_records
    (entry_id, run_id, kind, partner, template, version, used_at, units, charged, fee, share,
     currency, policy_id)
select * from unnest(%(entry_ids)s::bigint[], %(run_ids)s::bigint[], %(kinds)s::char[],
                     %(partners)s::text[], %(templates)s::text[], %(versions)s::int[],
                     %(used_ats)s::timestamptz[], %(units)s::bigint[], %(charged)s::bigint[],
                     %(fees)s::bigint[], %(shares)s::bigint[], %(currencies)s::char(3)[],
                     %(policy_ids)s::bigint[])
on conflict (run_id, kind) do nothing
returning entry_id

-- name: add_rejects
-- Billing logs that failed verification, for the error file.
insert into partners.billing_rejects (entry_id, payload, reason)
select * from unnest(%(entry_ids)s::bigint[], %(payloads)s::jsonb[], %(reasons)s::text[])
on conflict (entry_id) do nothing

-- name: use_record
-- The use record of a run, for a correction, with the file it is in (if any).
select r.id, r.run_id, r.partner, r.template, r.version, r.used_at, r.units, r.charged, r.fee,
       r.share, r.currency, r.policy_id,
       coalesce(r.file_seq, (select f.seq from partners.mdr_files f
                             where r.file_seq is null and r.id > f.after_id
                               and r.id <= f.upto_id)) as file_seq
from partners.billing_records r where r.run_id = %(run_id)s and r.kind = 'U'

-- name: add_correction
-- A correction: the use's amounts negated, in a later file (never an edit of a sent one).
insert into partners.billing_records
    (entry_id, run_id, kind, partner, template, version, used_at, units, charged, fee, share,
     currency, policy_id)
select 0, run_id, 'C', partner, template, version, now(), -units, -charged, -fee, -share,
       currency, policy_id
from partners.billing_records where run_id = %(run_id)s and kind = 'U'
on conflict (run_id, kind) do nothing
returning id

-- name: next_seq
-- The next file sequence number and where its records start, locked until the file's
-- transaction ends (file writers take turns here).
update partners.mdr_sequence set last = last + 1 returning last, filed_to

-- name: lock_records
-- Wait for every transaction adding records to end, and hold new ones off until this one
-- does: after it, no record with an id in the range being taken can still appear.
lock table partners.billing_records in share mode

-- name: claim_range
-- The next file's range: up to `limit` records after `after`, oldest first; with the
-- file's totals, read in the same pass.
select count(*)::int as records, max(id) as upto, coalesce(sum(units), 0)::bigint as units,
       coalesce(sum(charged), 0)::bigint as charged, coalesce(sum(fee), 0)::bigint as fee,
       coalesce(sum(share), 0)::bigint as share
from (select id, units, charged, fee, share from partners.billing_records
      where id > %(after)s and file_seq is null order by id limit %(limit)s) todo

-- name: set_filed_to
-- The next file starts after this file's last record.
update partners.mdr_sequence set filed_to = %(upto)s

-- name: file_records
-- A file's records in file order (a file of before ranges: upto null, by file_seq).
select id as record_id, run_id, partner, template, version, used_at, units, charged, fee,
       share, currency, kind
from partners.billing_records
where (%(upto)s::bigint is null and file_seq = %(seq)s)
   or (file_seq is null and id > %(after)s::bigint and id <= %(upto)s::bigint)
order by id

-- name: add_file
-- An MDR file, written.
insert into partners.mdr_files
    (seq, name, sender, recipient, test, created_at, records, units, charged, fee, share,
     checksum, bytes, after_id, upto_id)
values (%(seq)s, %(name)s, %(sender)s, %(recipient)s, %(test)s, %(created_at)s, %(records)s,
        %(units)s, %(charged)s, %(fee)s, %(share)s, %(checksum)s, %(bytes)s, %(after_id)s,
        %(upto_id)s)

-- name: file
-- One MDR file.
select seq, name, sender, recipient, test, created_at, records, units, charged, fee, share,
       checksum, bytes, state, attempts, last_error, sent_at, after_id, upto_id
from partners.mdr_files where seq = %(seq)s

-- name: files
-- MDR files, newest first.
select seq, name, sender, recipient, test, created_at, records, units, charged, fee, share,
       checksum, bytes, state, attempts, last_error, sent_at
from partners.mdr_files order by seq desc limit %(limit)s

-- name: unsent_files
-- Files not yet confirmed, in sequence order: they go in this order and no other.
select seq from partners.mdr_files where state = 'written' order by seq

-- name: mark_sent
-- The far side holds the file under its final name, checked.
update partners.mdr_files set state = 'sent', sent_at = now(), last_error = null
where seq = %(seq)s and state = 'written'

-- name: note_attempt
-- A transfer attempt that failed, with its reason.
update partners.mdr_files set attempts = attempts + 1, last_error = %(error)s
where seq = %(seq)s

-- name: unfiled_rejects
-- Rejected billing logs not yet in an error file.
select id, entry_id, payload, reason, rejected_at from partners.billing_rejects
where error_file is null order by id limit %(limit)s

-- name: file_rejects
-- Rejected logs written to an error file.
update partners.billing_rejects set error_file = %(name)s where id = any(%(ids)s)

-- name: gauges
-- What an operator watches: billing logs waiting, records unfiled, files unsent, and the
-- age of the oldest run not yet in a sent file.
select
  (select count(*) from journal.lane_entries
    where lane = 'partners.billing' and state in ('waiting', 'ready', 'taken')) as logs_waiting,
  (select count(*) from journal.lane_entries
    where lane = 'partners.billing' and state = 'parked') as logs_parked,
  (select count(*) from partners.billing_records
    where file_seq is null and id > (select filed_to from partners.mdr_sequence))
    as records_unfiled,
  (select count(*) from partners.mdr_files where state = 'written') as files_unsent,
  extract(epoch from now() - least(
    (select min(created_at) from journal.lane_entries
      where lane = 'partners.billing' and state in ('waiting', 'ready', 'taken', 'parked')),
    (select min(r.used_at) from partners.billing_records r
      where r.file_seq is null and r.id > (select filed_to from partners.mdr_sequence)),
    (select min((select min(r.used_at) from partners.billing_records r
                 where case when f.upto_id is null then r.file_seq = f.seq
                            else r.file_seq is null and r.id > f.after_id
                                 and r.id <= f.upto_id end))
      from partners.mdr_files f where f.state = 'written')))::float8 as oldest_unbilled_s

-- name: file_lines
-- A file's record lines in the MDR format (docs/partners.md), rendered by the server and
-- streamed with COPY: names hold no `|`, tab, backslash or newline, so COPY's text format
-- passes each line through unchanged.
copy (
  select 'D|' || row_number() over (order by id) || '|' || id || '|' || run_id || '|'
         || partner || '|' || template || '|' || version || '|'
         || to_char(used_at at time zone 'UTC', 'YYYYMMDD"T"HH24MISS"Z"') || '|' || units
         || '|' || charged || '|' || fee || '|' || share || '|' || currency || '|' || kind
  from partners.billing_records
  where file_seq is null and id > %(after)s::bigint and id <= %(upto)s::bigint order by id
) to stdout

-- name: file_lines_by_seq
-- The same for a file written before ranges: its records carry its number.
copy (
  select 'D|' || row_number() over (order by id) || '|' || id || '|' || run_id || '|'
         || partner || '|' || template || '|' || version || '|'
         || to_char(used_at at time zone 'UTC', 'YYYYMMDD"T"HH24MISS"Z"') || '|' || units
         || '|' || charged || '|' || fee || '|' || share || '|' || currency || '|' || kind
  from partners.billing_records where file_seq = %(seq)s order by id
) to stdout

-- name: file_totals
-- A file's record count and totals, for its trailer.
select count(*)::int as records, coalesce(sum(units), 0)::bigint as units,
       coalesce(sum(charged), 0)::bigint as charged, coalesce(sum(fee), 0)::bigint as fee,
       coalesce(sum(share), 0)::bigint as share
from partners.billing_records
where file_seq is null and id > %(after)s::bigint and id <= %(upto)s::bigint

-- name: file_totals_by_seq
-- The same for a file written before ranges.
select count(*)::int as records, coalesce(sum(units), 0)::bigint as units,
       coalesce(sum(charged), 0)::bigint as charged, coalesce(sum(fee), 0)::bigint as fee,
       coalesce(sum(share), 0)::bigint as share
from partners.billing_records where file_seq = %(seq)s
