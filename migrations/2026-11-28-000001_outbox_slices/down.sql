DROP TABLE outbox_slice_owners;
DROP INDEX outbox_pending_slice;
ALTER TABLE outbox DROP COLUMN slice;
