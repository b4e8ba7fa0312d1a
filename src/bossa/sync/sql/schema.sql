-- The whole current schema of sync; migrations/ are the steps that build it.
-- Sync keeps no tables: its events are journal entries on its lane (one per pipeline
-- instance, S5), the account data they change is rating's. It reads contracts and
-- customers through customers' published views and entries through the journal's.
create schema sync;

select journal.declare_lane('sync.pipeline.0', 'sync');
