-- Rated usage written by the rating pipeline through a published function, and read back for tracing.

-- published: ledger.add_usage
-- Rated usage from the rating pipeline: one row per account, day and rating batch (the
-- batch's records stay with rating, by record key, and trace back through `p_reference`).
-- Returns the rows added. An unknown account is refused (the foreign key), so rating
-- learns of it instead of charging nobody.
create function ledger.add_usage(
    p_accounts text[], p_used_at timestamptz[], p_charges bigint[], p_reference text
) returns integer
language sql as $$
    with added as (
        insert into ledger.rated_usage (account_id, used_at, charge, description)
        select a, u, c, p_reference
        from unnest(p_accounts, p_used_at, p_charges) as x(a, u, c)
        returning 1
    )
    select count(*)::integer from added
$$;

-- published: ledger.usage_lines
-- Rated usage with the bill that charged it (null until billed), for tracing a bill line
-- back to the rating batch whose records it sums.
create view ledger.usage_lines as
select id, account_id, used_at, charge, description as reference, bill_id
from ledger.rated_usage;
