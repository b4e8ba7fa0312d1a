-- A batch takes its rated records out of suspense by looking up its own rows, not by
-- scanning suspense against all rated usage (bench: 1.4-1.7 s on 2.2M rated rows and a
-- 300k suspense, growing with both; tests/rating/test_query_plans.py pins the plans).

-- The rows of one batch. BRIN: batch ids grow with the table's append order, so a few
-- block ranges hold a batch, and COPY of rated rows keeps no per-row btree entry for it.
-- autosummarize: the ranges a batch filled are summarized soon after, not at the next
-- vacuum (unsummarized ranges are read by every lookup until then).
create index rated_usage_batch on rating.rated_usage using brin (batch_id)
    with (pages_per_range = 32, autosummarize = on);

-- The records a batch suspended (recycling by batch reads it too).
create index suspense_batch on rating.suspense (batch_id);
