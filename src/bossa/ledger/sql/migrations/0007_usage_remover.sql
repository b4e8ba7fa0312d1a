-- Rerating (issue 14): rating replaces a period's unbilled usage rows set-wise.

-- published: ledger.remove_usage
-- Remove the unbilled usage rows of these (account, reference) pairs whose day is in
-- [p_from, p_to): rating rerates those days and books them again in the same
-- transaction. A billed row is never removed: if any row in scope is billed the call
-- fails (raises) and nothing is removed, since its bill is issued. Returns the rows removed.
create function ledger.remove_usage(
    p_accounts text[], p_references text[], p_from timestamptz, p_to timestamptz
) returns integer
language plpgsql as $$
declare
    v_removed integer;
begin
    if exists (
        select 1 from ledger.rated_usage r
        join unnest(p_accounts, p_references) as k(account_id, reference)
          on r.account_id = k.account_id and r.description = k.reference
        where r.used_at >= p_from and r.used_at < p_to and r.bill_id is not null
    ) then
        raise exception 'usage in scope is billed already' using errcode = 'P0001';
    end if;
    with removed as (
        delete from ledger.rated_usage r
        using unnest(p_accounts, p_references) as k(account_id, reference)
        where r.account_id = k.account_id and r.description = k.reference
          and r.used_at >= p_from and r.used_at < p_to and r.bill_id is null
        returning 1
    )
    select count(*)::integer into v_removed from removed;
    return v_removed;
end
$$;
