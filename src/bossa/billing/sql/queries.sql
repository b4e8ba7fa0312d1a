-- Named queries of billing.

-- name: lock_books_shared
-- Payments decide staged-or-online under this lock; a run's start and end take it
-- exclusively, so no payment straddles the snapshot or the switch back.
select pg_advisory_xact_lock_shared(7301001)

-- name: lock_books
-- The exclusive side of lock_books_shared.
select pg_advisory_xact_lock(7301001)

-- name: open_run
-- The run that holds the books now, if any (running or settling).
select * from billing.runs where status in ('running', 'settling')

-- name: payment_context
-- What a payment decides on, in one snapshot (taken with the account locked and the
-- books lock held shared): the run that holds the books, if any, and the account's
-- books, unsettled staged items and what it owes on bills not yet past due (the open
-- run's bills count as not yet due: docs/billing.md, "Arrears"). One statement, so an
-- item being settled meanwhile is counted once, either staged or posted.
with open_run as (select id from billing.runs where status in ('running', 'settling'))
select
    (select id from open_run) as run_id,
    coalesce(sum(b.amount) filter (where b.book = 'prepaid'), 0) as prepaid,
    coalesce(sum(b.amount) filter (where b.book = 'receivable'), 0) as receivable,
    coalesce(sum(b.amount) filter (where b.book = 'cash'), 0) as cash,
    (select coalesce(sum(amount), 0) from billing.staged_deposits
     where account_id = %(account)s and settled_at is null) as staged_deposits,
    (select coalesce(sum(amount), 0) from billing.staged_writeoffs
     where account_id = %(account)s and settled_at is null) as staged_writeoffs,
    (select coalesce(sum(bl.amount - bl.paid_from_prepaid), 0) from ledger.issued_bills bl
     where bl.account_id = %(account)s
       and (bl.due_date >= %(today)s::date
            or bl.bill_run_id = (select id from open_run))) as not_yet_due
from ledger.book_balances b
where b.account_id = %(account)s

-- name: run
-- One run.
select * from billing.runs where id = %(run)s

-- name: run_for_update
-- One run, locked: waits for the bill-run chunks under way (they hold it in share mode).
select * from billing.runs where id = %(run)s for update

-- name: current_window
-- B1: the planned window of a bill cycle that contains now (a run opens only in one).
select * from billing.windows
where bill_cycle = %(cycle)s and planned_start <= now() and planned_end > now()
order by planned_start desc limit 1

-- name: overlapping_run
-- A run of the cycle, not cancelled, whose period overlaps the one given.
select id, period_start, period_end from billing.runs
where bill_cycle = %(cycle)s and cancelled_at is null
  and period_start <= %(period_end)s and period_end >= %(period_start)s
order by id limit 1

-- name: planned_window
-- B1: the planned window that contains now, if any.
select * from billing.windows
where planned_start <= now() and planned_end > now()
order by planned_start desc limit 1

-- name: add_window
-- Plan a bill-run window.
insert into billing.windows (bill_cycle, planned_start, planned_end, created_by)
values (%(cycle)s, %(start)s, %(end)s, %(actor)s) returning id

-- name: start_run
-- Open a run (fails if one is open: runs_one_open).
insert into billing.runs (bill_cycle, period_start, period_end, due_days, status, planned_end,
                          started_by)
values (%(cycle)s, %(period_start)s, %(period_end)s, %(due_days)s, 'running', %(planned_end)s,
        %(actor)s)
returning id

-- name: snapshot
-- B6: the books of every account of the cycle at the run's start.
insert into billing.snapshots (run_id, account_id, book, amount)
select %(run)s, b.account_id, b.book, b.amount
from ledger.book_balances b join ledger.billing_accounts a on a.id = b.account_id
where a.bill_cycle = %(cycle)s

-- name: run_accounts
-- The accounts the run bills: those of the cycle, closed ones aside (billed no more).
insert into billing.run_accounts (run_id, account_id)
select %(run)s, id from ledger.billing_accounts
where bill_cycle = %(cycle)s and status <> 'closed'

-- name: cycle_has_accounts
-- Does any account bill in this cycle (a run or a window for an unknown cycle is a typo)?
select exists (select 1 from ledger.billing_accounts where bill_cycle = %(cycle)s) as found

-- name: set_total
-- How many accounts the run bills.
update billing.runs set accounts_total = %(total)s where id = %(run)s

-- name: bill_chunk
-- Bill the next chunk of a run's accounts (see billing.bill_chunk): the accounts billed
-- and the fees charged.
select billed, fees from billing.bill_chunk(%(run)s, %(limit)s, %(actor)s)

-- name: progress
-- A run's progress from its committed chunks: accounts billed, and the rate over the
-- last minute (accounts billed by the chunks that ended in it, since the first of them
-- began); staged items not yet settled.
select r.id, r.status, r.accounts_total, r.started_at, r.billed_at, r.settled_at,
       r.cancelled_at, now() as now,
       coalesce(c.billed, 0) as billed, c.first_started, c.last_finished,
       coalesce(m.billed, 0) as recent_billed, m.since as recent_since,
       (select count(*) from billing.staged_deposits where run_id = r.id and settled_at is null)
         + (select count(*) from billing.staged_writeoffs
            where run_id = r.id and settled_at is null) as staged_unsettled
from billing.runs r
cross join lateral (
    select sum(billed) as billed, min(started_at) as first_started,
           max(finished_at) as last_finished
    from billing.run_chunks where run_id = r.id
) c
cross join lateral (
    select sum(billed) as billed, min(started_at) as since from billing.run_chunks
    where run_id = r.id and finished_at > now() - interval '60 seconds'
) m
where r.id = %(run)s

-- name: billed_count
-- Accounts of a run billed so far (from its committed chunks).
select coalesce(sum(billed), 0) as billed from billing.run_chunks where run_id = %(run)s

-- name: mark_settling
-- B5: every account billed: the run is over; settlement begins (payments still staged).
update billing.runs set status = 'settling', billed_at = now()
where id = %(run)s and status = 'running'
  and not exists (select 1 from billing.run_accounts where run_id = %(run)s and not billed)
returning id

-- name: mark_settled
-- Staging ends: payments post online again. A cancelled run ends as cancelled.
update billing.runs
set status = case when cancelled_at is null then 'settled' else 'cancelled' end,
    settled_at = now(),
    settled_through = (select coalesce(max(id), 0) from ledger.posted_transactions)
where id = %(run)s and status = 'settling'

-- name: mark_cancelling
-- Cancel a run no account of which was billed: billing stops (no chunk bills a run that
-- is not running) and settlement of what it staged begins; who and when are recorded.
update billing.runs
set status = 'settling', cancelled_at = now(), cancelled_by = %(actor)s
where id = %(run)s and status = 'running'
  and not exists (select 1 from billing.run_accounts where run_id = %(run)s and billed)
returning id

-- name: drop_run_accounts
-- A cancelled run's list of accounts to bill: none will be.
delete from billing.run_accounts where run_id = %(run)s

-- name: drop_snapshot
-- A cancelled run's snapshot: nothing will be reconciled with it.
delete from billing.snapshots where run_id = %(run)s

-- name: stage_deposit
-- B2: a deposit taken during a run.
insert into billing.staged_deposits (run_id, account_id, amount, idempotency_key, received_by)
values (%(run)s, %(account)s, %(amount)s, %(key)s, %(actor)s) returning id, received_at

-- name: stage_writeoff
-- B2: a write-off instruction taken during a run.
insert into billing.staged_writeoffs (run_id, account_id, amount, idempotency_key, received_by)
values (%(run)s, %(account)s, %(amount)s, %(key)s, %(actor)s) returning id, received_at

-- name: staged_totals
-- What an account has staged and not yet settled (for authorisation and arrears).
select
    (select coalesce(sum(amount), 0) from billing.staged_deposits
     where account_id = %(account)s and settled_at is null) as deposits,
    (select coalesce(sum(amount), 0) from billing.staged_writeoffs
     where account_id = %(account)s and settled_at is null) as writeoffs

-- name: settle_batch
-- B4: apply the next staged items (see billing.settle_batch).
select billing.settle_batch(%(cutoff)s, %(limit)s, %(actor)s) as applied

-- name: payment_by_key
-- A payment by its idempotency key.
select * from billing.payments where idempotency_key = %(key)s

-- name: record_payment
-- Remember a payment's outcome for replays.
insert into billing.payments (idempotency_key, request_hash, account_id, kind, amount, outcome)
values (%(key)s, %(hash)s, %(account)s, %(kind)s, %(amount)s, %(outcome)s)

-- name: overdue_accounts
-- Dunning: active accounts with arrears (the past-due amount) part of which is past due
-- by more than the account's grace days. Bills are paid oldest first; the open run's
-- bills are not yet due; write-offs staged during a run count as paid. `arrears` is the
-- whole past-due amount: what paying restores the account. With `account`, that one
-- account only (dunning asks again under the account's lock before it suspends).
with open_run as (select id from billing.runs where status in ('running', 'settling'))
select a.id as account_id, a.currency,
       b.amount - n.not_yet_due - w.staged as arrears
from ledger.billing_accounts a
join ledger.book_balances b on b.account_id = a.id and b.book = 'receivable'
cross join lateral (
    select
        coalesce(sum(bl.amount - bl.paid_from_prepaid) filter (
            where bl.due_date + a.grace_days >= %(today)s::date
               or bl.bill_run_id = (select id from open_run)), 0)
            as within_grace,
        coalesce(sum(bl.amount - bl.paid_from_prepaid) filter (
            where bl.due_date >= %(today)s::date
               or bl.bill_run_id = (select id from open_run)), 0)
            as not_yet_due
    from ledger.issued_bills bl where bl.account_id = a.id
) n
cross join lateral (
    select coalesce(sum(amount), 0) as staged from billing.staged_writeoffs sw
    where sw.account_id = a.id and sw.settled_at is null
) w
where a.status = 'active' and b.amount > 0
  and b.amount - n.within_grace - w.staged > 0
  and (%(account)s::text is null or a.id = %(account)s::text)
order by a.id
limit %(limit)s

-- name: reconcile
-- B6 per account: snapshot + the run's bills + the settled staged items = final books.
with snap as (
    select account_id, book::text as book, amount from billing.snapshots where run_id = %(run)s
),
run_tx as (
    select p.account_id, p.book::text as book, sum(p.amount) as amount
    from ledger.posted_transactions t
    join ledger.transaction_postings p on p.transaction_id = t.id
    where t.reference in (
        select 'bill:' || id from ledger.issued_bills where bill_run_id = %(run)s)
    group by 1, 2
),
accounts as (
    select id as account_id from ledger.billing_accounts
    where bill_cycle = (select bill_cycle from billing.runs where id = %(run)s)
),
staged_tx as (
    select p.account_id, p.book::text as book, sum(p.amount) as amount
    from ledger.transaction_postings p
    join accounts using (account_id)
    where p.transaction_id in (
        select transaction_id from billing.staged_deposits where run_id = %(run)s
        union all
        select transaction_id from billing.staged_writeoffs where run_id = %(run)s)
    group by 1, 2
),
later_tx as (
    -- Online activity after the run settled (later payments, later runs) is not a
    -- difference: the report can be run at any time after settlement.
    select p.account_id, p.book::text as book, sum(p.amount) as amount
    from ledger.posted_transactions t
    join ledger.transaction_postings p on p.transaction_id = t.id
    join accounts a on a.account_id = p.account_id
    -- By id, not time: a payment that began before the switch but posted after it
    -- holds an earlier now() yet a later id (it waited on the books lock).
    where t.id > (select settled_through from billing.runs where id = %(run)s)
      and t.id not in (
          select transaction_id from billing.staged_deposits
          where run_id = %(run)s and transaction_id is not null
          union all
          select transaction_id from billing.staged_writeoffs
          where run_id = %(run)s and transaction_id is not null)
    group by 1, 2
),
expected as (
    select account_id, book, sum(amount) as amount
    from (select * from snap union all select * from run_tx union all select * from staged_tx
          union all select * from later_tx) x
    group by 1, 2
),
final as (
    select b.account_id, b.book::text as book, b.amount from ledger.book_balances b
    join accounts using (account_id)
)
select coalesce(e.account_id, f.account_id) as account_id, coalesce(e.book, f.book) as book,
       coalesce(e.amount, 0) as expected, coalesce(f.amount, 0) as final
from expected e
full join final f on f.account_id = e.account_id and f.book = e.book
where coalesce(e.amount, 0) <> coalesce(f.amount, 0)
order by 1, 2
limit %(limit)s

-- name: run_totals
-- A run's totals for the reconciliation report.
select
    (select count(*) from ledger.issued_bills where bill_run_id = %(run)s) as bills,
    (select coalesce(sum(amount), 0) from ledger.issued_bills where bill_run_id = %(run)s)
        as billed,
    (select count(*) from billing.staged_deposits where run_id = %(run)s) as staged_deposits,
    (select coalesce(sum(amount), 0) from billing.staged_deposits where run_id = %(run)s)
        as staged_deposit_amount,
    (select count(*) from billing.staged_writeoffs where run_id = %(run)s) as staged_writeoffs,
    (select coalesce(sum(amount), 0) from billing.staged_writeoffs where run_id = %(run)s)
        as staged_writeoff_amount,
    (select count(*) from billing.staged_deposits where run_id = %(run)s and settled_at is null)
      + (select count(*) from billing.staged_writeoffs
         where run_id = %(run)s and settled_at is null) as unsettled

-- name: gauges
-- What an operator watches during a bill run: progress, staged items, settlement lag.
select
    (select id from billing.runs where status in ('running', 'settling')) as open_run,
    (select coalesce(sum(c.billed), 0)::float8 / greatest(max(r.accounts_total), 1)
     from billing.runs r left join billing.run_chunks c on c.run_id = r.id
     where r.status in ('running', 'settling')) as progress,
    (select count(*) from billing.staged_deposits where settled_at is null) as staged_deposits,
    (select count(*) from billing.staged_writeoffs where settled_at is null) as staged_writeoffs,
    extract(epoch from now() - least(
        (select min(received_at) from billing.staged_deposits where settled_at is null),
        (select min(received_at) from billing.staged_writeoffs where settled_at is null)
    )) as settlement_lag_s

-- name: record_restore
-- B3: a contract restored by an arrears payment (its restore order is queued with it).
insert into billing.restores (payment, sa_id, account_id)
values (%(payment)s, %(sa_id)s, %(account)s)
on conflict (payment, sa_id) do nothing

-- name: restore_sent
-- The service lane sent the restore order of a payment's contract to provisioning; the
-- first time is kept (a retried entry sends nothing twice).
update billing.restores set sent_at = coalesce(sent_at, now())
where payment = %(payment)s and sa_id = %(sa_id)s

-- name: restores
-- The latest restores of an account's contracts, newest first.
select payment, sa_id, queued_at, sent_at from billing.restores
where account_id = %(account)s
order by queued_at desc, sa_id
limit %(limit)s

-- name: arrears
-- An account's arrears inputs (see payment_context), without locks: for showing it.
with open_run as (select id from billing.runs where status in ('running', 'settling'))
select
    coalesce((select amount from ledger.book_balances
              where account_id = %(account)s and book = 'receivable'), 0) as receivable,
    (select coalesce(sum(amount), 0) from billing.staged_writeoffs
     where account_id = %(account)s and settled_at is null) as staged_writeoffs,
    (select coalesce(sum(bl.amount - bl.paid_from_prepaid), 0) from ledger.issued_bills bl
     where bl.account_id = %(account)s
       and (bl.due_date >= %(today)s::date
            or bl.bill_run_id = (select id from open_run))) as not_yet_due
