-- MDR files take their records by id range instead of marking each record with its file:
-- the mark was an update of every record (a new row version and index entries each), four
-- fifths of a file's cost. A file now holds the records with after_id < id <= upto_id
-- whose file_seq is null; files written before this step keep their records' file_seq.
-- The writer picks the range under SHARE on billing_records, so no record with a lower id
-- can commit after the range was taken. filed_to is where the next file starts: below the
-- lowest record not yet in a file, so none of those is skipped.
alter table partners.mdr_sequence
    add column filed_to bigint not null default 0 check (filed_to >= 0);
update partners.mdr_sequence set filed_to = coalesce(
    (select min(id) - 1 from partners.billing_records where file_seq is null),
    (select max(id) from partners.billing_records),
    0);
alter table partners.mdr_files add column after_id bigint, add column upto_id bigint;
-- Every new record has file_seq null: this index would copy the primary key.
drop index partners.billing_records_unfiled;
