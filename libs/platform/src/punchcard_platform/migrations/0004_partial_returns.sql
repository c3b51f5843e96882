-- Returns of some lines, several returns per sale, one ledger (issue 18).

-- The ledger books once per causing event: a sale's own earn and burn (cause 'sale'), and
-- each return's restore and revoke (cause: the return's event id), since a sale may now be
-- returned in several parts, each moving points of its own.
ALTER TABLE points_ledger ADD COLUMN cause text;
UPDATE points_ledger SET cause = 'sale' WHERE kind IN ('earn', 'burn');
UPDATE points_ledger AS l SET cause = t.return_event_id
FROM transaction_returns AS t
WHERE l.transaction_no = t.transaction_no AND l.kind IN ('restore', 'revoke');
UPDATE points_ledger SET cause = 'return' WHERE cause IS NULL;
ALTER TABLE points_ledger ALTER COLUMN cause SET NOT NULL;
ALTER TABLE points_ledger DROP CONSTRAINT points_ledger_transaction_no_kind_key;
ALTER TABLE points_ledger ADD CONSTRAINT points_ledger_once_per_cause UNIQUE (transaction_no, cause, kind);
-- The ledger reads newest first by when the customer shopped (or returned), ties in booking
-- order; a sale uploaded late sits at its sale time, not where it was booked.
DROP INDEX points_ledger_by_customer;
CREATE INDEX points_ledger_by_customer ON points_ledger (customer_id, occurred_at DESC, id DESC);

-- What has been returned of each sale so far: the once-only rules of partial returns are
-- decided from this row under the sale's lock (returns' store.lock_transactions).
CREATE TABLE sale_returns (
    transaction_no  text        PRIMARY KEY REFERENCES receipts (transaction_no),
    returned        numeric[]   NOT NULL,              -- per line of the sale, quantity returned
    points_restored bigint      NOT NULL DEFAULT 0,    -- in all, over every return of the sale
    points_revoked  bigint      NOT NULL DEFAULT 0,
    returned_amount numeric     NOT NULL DEFAULT 0,    -- R: the returned share of the positive amounts
    fully_returned  boolean     NOT NULL DEFAULT false,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

INSERT INTO sale_returns (transaction_no, returned, points_restored, points_revoked,
                          returned_amount, fully_returned)
SELECT r.transaction_no,
       ARRAY(SELECT (l ->> 'quantity')::numeric
             FROM jsonb_array_elements(r.document -> 'lines') WITH ORDINALITY AS x(l, n)
             ORDER BY n),
       CASE WHEN r.customer_id IS NULL THEN 0 ELSE r.points_used END,
       CASE WHEN r.customer_id IS NULL THEN 0 ELSE r.points_earned END,
       COALESCE((SELECT sum(GREATEST((l ->> 'amount')::numeric, 0))
                 FROM jsonb_array_elements(r.document -> 'lines') AS l), 0),
       true
FROM transaction_returns AS t JOIN receipts AS r USING (transaction_no);

DROP TABLE transaction_returns;

-- A return's own number within its sale: the same return_id again is a redelivery (same
-- content) or a conflicting duplicate (other content), and the first one stands.
ALTER TABLE return_events ADD COLUMN return_id text;
ALTER TABLE return_events ADD COLUMN content_hash bytea;
CREATE UNIQUE INDEX return_events_once_per_return_id
    ON return_events (transaction_no, return_id) WHERE return_id IS NOT NULL;

-- The order in which a sale's returns were decided, taken as each decision is made (under
-- the sale's lock): the latest outcome is the highest, whatever the rows' timestamps say.
CREATE SEQUENCE return_decisions AS bigint;
ALTER TABLE return_events ADD COLUMN decision_seq bigint;
UPDATE return_events AS e SET decision_seq = o.n
FROM (SELECT event_id, row_number() OVER (ORDER BY decided_at, seq) AS n
      FROM return_events WHERE status <> 'pending') AS o
WHERE e.event_id = o.event_id;
SELECT setval('return_decisions', COALESCE((SELECT max(decision_seq) FROM return_events), 0) + 1, false);
DROP INDEX return_events_by_transaction;
CREATE INDEX return_events_by_transaction ON return_events (transaction_no, decision_seq DESC NULLS LAST, seq DESC);
