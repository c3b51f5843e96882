-- The outbox at the consumers' pace (issue 9).
-- payload holds the event's JSON exactly as encoded once by the writer: the relay sends
-- these bytes without re-encoding them, and the published keys keep the contract's order
-- (jsonb would have reordered them). The relay deletes the rows it has published instead
-- of marking them sent, so a row costs one insert and one delete, not an insert, an
-- update (a second tuple and index entries) and a later delete.
DELETE FROM outbox WHERE sent_at IS NOT NULL;
DROP INDEX outbox_unsent;
ALTER TABLE outbox ALTER COLUMN payload TYPE bytea USING convert_to(payload::text, 'UTF8');
ALTER TABLE outbox DROP COLUMN sent_at;
