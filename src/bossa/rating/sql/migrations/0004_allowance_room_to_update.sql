-- Every batch updates the allowance counters of most accounts it rated (one conflict
-- update per (account, month)). With full pages each new version goes to another page and
-- takes a new primary key entry; with room on the page it stays there (a HOT update, no
-- index entry): 86,000 counters updated, 346k -> 231k WAL records, 25.2 -> 16.4 MB, about
-- 20% less time (rating's booking, docs/sync-and-rating.md "Speed"). Pages written before
-- keep their rows packed until autovacuum or an update moves them.
alter table rating.allowance_usage set (fillfactor = 60);
