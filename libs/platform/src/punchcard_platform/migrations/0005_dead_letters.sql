-- Dead letters kept in PostgreSQL as well as on <topic>.dlq (issue 22), so an operator can
-- list them, read their bytes in the console and replay them with `punchcard dlq replay`.
-- The consumer loop writes a row in the same step that publishes the dead letter, before
-- the offset moves on; the unique source position makes writing it again harmless.
-- A replayed record that fails again arrives at a new offset, so it is a new row.
CREATE TABLE dead_letters (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic            text        NOT NULL,              -- the source topic, where a replay goes
    "partition"      integer     NOT NULL,
    "offset"         bigint      NOT NULL,
    key              bytea,                             -- the original key, unchanged
    reason           text        NOT NULL,              -- punchcard.error.reason
    detail           text        NOT NULL,              -- punchcard.error.detail (at most 4 KiB)
    value            bytea,                             -- the original bytes, unchanged
    headers          jsonb       NOT NULL DEFAULT '[]', -- the original headers: [[name, base64]]
    dead_lettered_at timestamptz NOT NULL DEFAULT now(),
    replayed_at      timestamptz,
    UNIQUE (topic, "partition", "offset")
);
-- The console lists them newest first, all or of one reason.
CREATE INDEX dead_letters_by_time ON dead_letters (dead_lettered_at DESC, id DESC);
CREATE INDEX dead_letters_by_reason ON dead_letters (reason, dead_lettered_at DESC, id DESC);

-- The console's coupon page shows the uses made across customers. Without this, that sum
-- read the whole coupon_usage table (5,000,000 rows with 1,000,000 customers, about a
-- second); with it, the coupon's own rows (100,000 of them there: 0.2 s at p50, still
-- too slow; a running total per coupon kept by the writers would make it one row).
-- Only coupon_id is indexed, so an update of uses_made can stay a HOT update: only a
-- customer's first use of a coupon writes this index. (Including uses_made for an
-- index-only scan did not help in the benchmark: its table's visibility map stayed
-- unset after VACUUM, so every row was read from the table all the same.)
CREATE INDEX coupon_usage_by_coupon ON coupon_usage (coupon_id);
