-- Output events the broker refuses for good (issue 21): set aside so they do not hold back
-- the rows behind them, with the broker's error, until `punchcard outbox retry` queues them
-- again. A row here keeps the outbox row's columns and its original id (for the record of
-- where it stood); a retry gives it a new outbox id, at the end of the queue.
CREATE TABLE outbox_failed (
    id         bigint      PRIMARY KEY,
    topic      text        NOT NULL,
    key        text        NOT NULL,
    event_id   uuid        NOT NULL UNIQUE,
    payload    bytea       NOT NULL,
    created_at timestamptz NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT now(),
    error      text        NOT NULL
);
