-- Named queries of the ledger.

-- name: account
-- One account with its currency's exponent.
select a.*, c.exponent from ledger.accounts a join ledger.currencies c on c.code = a.currency
where a.id = %(account)s

-- name: account_locked
-- One account, locked for a payment on it. NO KEY UPDATE: it serialises payments on the
-- account without waiting for the key-share locks a bill-run chunk's foreign keys hold on
-- it (bench/billing: 22 s).
select a.*, c.exponent from ledger.accounts a join ledger.currencies c on c.code = a.currency
where a.id = %(account)s
for no key update of a

-- name: currency_exists
-- Is the currency one the ledger knows (with its exponent)?
select exists (select 1 from ledger.currencies where code = %(currency)s) as found

-- name: currency_exponent
-- How many minor units make one of the currency: 10^exponent (none when unknown).
select exponent from ledger.currencies where code = %(currency)s

-- name: list_accounts
-- A page of accounts by id, after the cursor, optionally of one customer, status or cycle.
select a.*, c.exponent from ledger.accounts a join ledger.currencies c on c.code = a.currency
where (%(customer)s::text is null or a.customer_id = %(customer)s)
  and (%(status)s::text is null or a.status = %(status)s)
  and (%(cycle)s::text is null or a.bill_cycle = %(cycle)s)
  and (%(after)s::text is null or a.id > %(after)s)
order by a.id
limit %(limit)s

-- name: update_account
-- An account's terms; a null leaves a term as it is (the credit limit has its own flag,
-- because null is a value it can take).
update ledger.accounts
set bill_cycle = coalesce(%(cycle)s, bill_cycle),
    grace_days = coalesce(%(grace_days)s, grace_days),
    credit_limit = case when %(set_limit)s then %(credit_limit)s::bigint else credit_limit end,
    dunning_profile = coalesce(%(profile)s, dunning_profile),
    updated_at = now(), updated_by = %(actor)s
where id = %(account)s
returning id

-- name: create_account
-- Open a billing account.
insert into ledger.accounts (id, customer_id, currency, bill_cycle, grace_days, credit_limit,
                             dunning_profile, created_by)
values (%(account)s, %(customer)s, %(currency)s, %(cycle)s, %(grace_days)s, %(credit_limit)s,
        %(profile)s, %(actor)s)
on conflict (id) do nothing
returning id

-- name: set_account_status
-- The account's service state (dunning suspends, a payment restores), with who and when.
update ledger.accounts
set status = %(status)s, status_changed_at = now(), status_changed_by = %(actor)s
where id = %(account)s
returning id

-- name: post
-- Post one balanced transaction and move the balances.
select ledger.post(%(account)s, %(kind)s, %(amount)s, %(books)s::ledger.book[],
                   %(amounts)s::bigint[], %(key)s, %(reference)s, %(actor)s) as id

-- name: balances
-- An account's balances by book.
select book::text as book, amount from ledger.balances where account_id = %(account)s

-- name: check_transactions
-- Transactions whose postings do not sum to zero (must be none).
select t.id, t.account_id, coalesce(sum(p.amount), 0) as total
from ledger.transactions t left join ledger.postings p on p.transaction_id = t.id
group by t.id, t.account_id
having coalesce(sum(p.amount), 0) <> 0
limit 100

-- name: check_balances
-- Balances that differ from the sum of their postings (must be none).
with sums as (
    select account_id, book, sum(amount) as total from ledger.postings group by 1, 2
)
select coalesce(b.account_id, s.account_id) as account_id, coalesce(b.book, s.book)::text as book,
       b.amount as balance, s.total as postings
from ledger.balances b
full join sums s on s.account_id = b.account_id and s.book = b.book
where coalesce(b.amount, 0) <> coalesce(s.total, 0)
limit 100
