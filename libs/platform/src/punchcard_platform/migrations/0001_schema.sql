-- The one schema that receipt-consumer, returns and coupon-query share.
-- Both writers change the same counters, so every effect is an atomic statement here
-- and every once-only rule is a primary key or unique constraint, never a read-then-write.

-- Receipts: one row per transaction_no, which is the dedup key of the contract.
CREATE TABLE receipts (
    transaction_no  text        PRIMARY KEY,
    customer_id     text,                         -- null for an anonymous sale
    store_id        text        NOT NULL,
    terminal_id     text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    currency        text        NOT NULL,
    total           numeric     NOT NULL,
    points_used     bigint      NOT NULL,
    points_earned   bigint      NOT NULL,
    coupons         jsonb       NOT NULL,         -- [{"coupon_id", "uses"}], summed per coupon
    document        jsonb       NOT NULL,         -- the event as sent, unknown fields kept
    content_hash    bytea       NOT NULL,         -- of the document without event_id: tells a redelivery from a conflict
    event_id        text        NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    returned_at     timestamptz,
    return_event_id text
);
CREATE INDEX receipts_by_customer ON receipts (customer_id, occurred_at DESC, transaction_no DESC)
    WHERE customer_id IS NOT NULL;

-- Coupon catalog. customer_ids live in coupon_targets so that a coupon issued to
-- 100,000 customers costs one index probe per eligibility question, not an array scan.
CREATE TABLE coupons (
    coupon_id         text        PRIMARY KEY,
    name              text        NOT NULL,
    description       text        NOT NULL DEFAULT '',
    uses_permitted    integer     CHECK (uses_permitted IS NULL OR uses_permitted >= 1),
    valid_from        timestamptz,
    valid_until       timestamptz,
    active            boolean     NOT NULL DEFAULT true,
    targeted          boolean     NOT NULL DEFAULT false,   -- true: only customers in coupon_targets
    store_ids         text[],                               -- null: every store
    restore_on_return boolean     NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_from IS NULL OR valid_until IS NULL OR valid_from < valid_until)
);

CREATE TABLE coupon_targets (
    coupon_id   text NOT NULL REFERENCES coupons (coupon_id) ON DELETE CASCADE,
    customer_id text NOT NULL,
    PRIMARY KEY (coupon_id, customer_id)
);

-- Uses made per customer and coupon. A coupon not (yet) in the catalog is still counted,
-- so there is deliberately no foreign key to coupons.
CREATE TABLE coupon_usage (
    customer_id text    NOT NULL,
    coupon_id   text    NOT NULL,
    uses_made   integer NOT NULL CHECK (uses_made >= 0),
    PRIMARY KEY (customer_id, coupon_id)
);

-- Points: the ledger is the truth, the balance its running sum kept in the same transaction.
CREATE TABLE points_balances (
    customer_id text   PRIMARY KEY,
    balance     bigint NOT NULL
);

CREATE TABLE points_ledger (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id    text        NOT NULL,
    transaction_no text        NOT NULL,
    kind           text        NOT NULL CHECK (kind IN ('earn', 'burn', 'restore', 'revoke')),
    points         bigint      NOT NULL,              -- signed: burn and revoke are negative
    occurred_at    timestamptz NOT NULL,
    UNIQUE (transaction_no, kind)                     -- each kind books once per transaction
);
CREATE INDEX points_ledger_by_customer ON points_ledger (customer_id, id DESC);

-- Returns. return_events holds every return event once (its event_id is the redelivery
-- guard), including those waiting for their receipt. transaction_returns is the
-- once-only rule per transaction: the insert that wins its primary key is the return
-- that applies; every later one is already_returned.
CREATE TABLE return_events (
    event_id       text        PRIMARY KEY,
    transaction_no text        NOT NULL,
    store_id       text        NOT NULL,
    terminal_id    text        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    reason         text,
    document       jsonb       NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now(),
    wait_until     timestamptz NOT NULL,               -- when a waiting return gives up
    status         text        NOT NULL CHECK (status IN ('pending', 'accepted', 'rejected')),
    outcome        jsonb,                              -- the ReturnOutcomeEvent, once decided
    decided_at     timestamptz,
    seq            bigint      GENERATED ALWAYS AS IDENTITY UNIQUE
);
CREATE INDEX return_events_by_transaction ON return_events (transaction_no, seq DESC);
CREATE INDEX return_events_pending ON return_events (wait_until) WHERE status = 'pending';

CREATE TABLE transaction_returns (
    transaction_no  text        PRIMARY KEY,
    return_event_id text        NOT NULL,
    applied_at      timestamptz NOT NULL DEFAULT now()
);

-- Outbox: output events written in the transaction of their effect, published by the relay.
CREATE TABLE outbox (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic      text        NOT NULL,
    key        text        NOT NULL,
    event_id   uuid        NOT NULL UNIQUE,
    payload    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

-- API keys for coupon-query: only a SHA-256 of the key is kept.
CREATE TABLE api_keys (
    key_id     text        PRIMARY KEY,
    name       text        NOT NULL DEFAULT '',
    scope      text        NOT NULL CHECK (scope IN ('read', 'admin')),
    key_hash   bytea       NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
