-- Named queries of imports. The SQL that stages, checks, applies and exports a kind's
-- rows is composed in store.py from the kind's description (models.KINDS).

-- name: begin_job
-- A job for this file, unless one exists for it already (then nothing: see find_job).
insert into imports.jobs (kind, sha256, file_name, format, all_or_nothing, created_by)
values (%(kind)s, %(sha256)s, %(file_name)s, %(format)s, %(all_or_nothing)s, %(actor)s)
on conflict (kind, sha256) do nothing
returning *

-- name: find_job
-- The job of this file of this kind.
select * from imports.jobs where kind = %(kind)s and sha256 = %(sha256)s

-- name: job
-- One job.
select * from imports.jobs where id = %(id)s

-- name: jobs
-- Jobs, newest first, a page at a time.
select * from imports.jobs
where (%(kind)s::text is null or kind = %(kind)s)
  and (%(status)s::text is null or status = %(status)s)
  and (%(before_id)s::bigint is null or id < %(before_id)s)
order by id desc
limit %(limit)s

-- name: lock_job
-- Only one process runs a job: a session lock, let go when the session ends (a killed
-- importer's with its connection).
select pg_try_advisory_lock(%(namespace)s::integer, %(id)s::integer) as locked

-- name: unlock_job
-- Let go of a job's session lock.
select pg_advisory_unlock(%(namespace)s::integer, %(id)s::integer) as unlocked

-- name: restart_job
-- A rerun: running again, with how it is asked to apply and its file's current name.
update imports.jobs
set status = 'running', all_or_nothing = %(all_or_nothing)s, file_name = %(file_name)s,
    last_error = null, updated_at = now(), finished_at = null
where id = %(id)s
returning *

-- name: forget_errors_after
-- A rerun checks again the rows not yet applied: their old rejections go.
delete from imports.job_errors where job_id = %(id)s and line > %(position)s

-- name: checked
-- The file is checked: how many rows it has and how many were rejected in all.
update imports.jobs
set rows = %(rows)s,
    rejected = (select count(*) from imports.job_errors where job_id = %(id)s),
    updated_at = now()
where id = %(id)s
returning *

-- name: advance
-- A chunk applied: the position moves in the same transaction as its rows.
update imports.jobs
set position = %(position)s, applied = applied + %(applied)s, updated_at = now()
where id = %(id)s
returning *

-- name: finish_job
-- The job ends: done, rejected (all or nothing) or failed, with the error if any.
update imports.jobs
set status = %(status)s, last_error = %(last_error)s, updated_at = now(),
    finished_at = case when %(status)s in ('done', 'rejected') then now() end
where id = %(id)s
returning *

-- name: job_errors
-- A job's rejected rows, by line (for the error file).
select line, field, reason, raw from imports.job_errors
where job_id = %(id)s and line > %(after_line)s
order by line
limit %(limit)s
