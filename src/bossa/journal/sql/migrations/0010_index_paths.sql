-- The hot functions plan with sequential and bitmap scans off (issue 13, p99
-- enqueue-to-start). A queue's statistics are stale by nature: a worker's first take
-- often runs on a lane that is empty, or was when last analyzed, and the plans of these
-- functions are kept for the connection's life (take_runs' generic from its first call).
-- Made on an empty table they were sequential scans, reading every entry, done ones
-- included, on every take, wait probe and ack until the next ANALYZE: 2-4 ms a
-- statement after 30,000 entries, where the index walks take 0.05-0.2 ms. Each of these
-- statements has an index made for it (entries_ready, the primary key, entries_leases,
-- entries_key_unfinished, keys_pkey), whatever the table holds.
-- (tests/journal/test_function_plans.py)
alter function journal.take_runs(text, integer, integer, uuid, double precision)
    set enable_seqscan = off set enable_bitmapscan = off;
alter function journal.wait_ready(text, integer, integer)
    set enable_seqscan = off set enable_bitmapscan = off;
alter function journal.ack(bigint[], uuid)
    set enable_seqscan = off set enable_bitmapscan = off;
alter function journal.fail(bigint[], uuid, text[], text[], integer, integer, integer)
    set enable_seqscan = off set enable_bitmapscan = off;
alter function journal.reap_expired(text, integer, integer, uuid[])
    set enable_seqscan = off set enable_bitmapscan = off;
alter function journal.advance_keys(text[], text[])
    set enable_seqscan = off set enable_bitmapscan = off;
