-- Reservations and campaign-wide coupon limits (issue 20).

-- Uses a coupon may have across all customers; null: no limit.
ALTER TABLE coupons ADD COLUMN total_uses_permitted integer
    CHECK (total_uses_permitted IS NULL OR total_uses_permitted >= 1);

-- A coupon's uses made across all customers, kept as a few shard rows summed on read, so
-- that two ingest transactions adding uses of the same hot coupon at once do not queue on
-- one row: each adds its whole batch's delta to the shard of its own backend
-- (pg_backend_pid() % 16). A shard alone means nothing (a return may take back from
-- another shard than the sale added to, so one may go below 0); their sum is exact, since
-- it moves in the same transaction as coupon_usage, by the same amounts.
CREATE TABLE coupon_totals (
    coupon_id text     NOT NULL,
    shard     smallint NOT NULL,
    uses_made bigint   NOT NULL,
    PRIMARY KEY (coupon_id, shard)
);
INSERT INTO coupon_totals (coupon_id, shard, uses_made)
SELECT coupon_id, 0, sum(uses_made) FROM coupon_usage GROUP BY coupon_id;

-- Uses held for a customer at a checkout. Active while status is 'active' and
-- expires_at > now(): an expired reservation stops counting at expires_at without any
-- job having run; the cleanup job only deletes rows ended a day ago. No foreign key to
-- coupons, as for coupon_usage: rows outlive nothing, and the coupon row is locked by
-- the reservation decision anyway.
CREATE TABLE reservations (
    reservation_id text        PRIMARY KEY,
    customer_id    text        NOT NULL,
    coupon_id      text        NOT NULL,
    uses           integer     NOT NULL CHECK (uses BETWEEN 1 AND 100),
    store_id       text,
    terminal_id    text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    status         text        NOT NULL DEFAULT 'active'
                               CHECK (status IN ('active', 'released', 'consumed')),
    ended_at       timestamptz,
    transaction_no text        -- the sale that consumed it
);
-- Active reservations by customer (this customer's holds) and by coupon (every
-- customer's holds of a capped coupon); ended ones are not indexed here.
CREATE INDEX reservations_active_by_customer ON reservations (customer_id, coupon_id, expires_at)
    INCLUDE (uses) WHERE status = 'active';
CREATE INDEX reservations_active_by_coupon ON reservations (coupon_id, expires_at)
    INCLUDE (uses) WHERE status = 'active';
CREATE INDEX reservations_by_end ON reservations (COALESCE(ended_at, expires_at));

-- Idempotency-Key of reservation calls, per API key, kept 24 hours: the request's
-- fingerprint (customer, coupon and body) and the 201 answer it was given. The row is
-- written in the reservation's own transaction, so a refused call leaves no key behind.
CREATE TABLE reservation_requests (
    key_id          text        NOT NULL,
    idempotency_key text        NOT NULL,
    fingerprint     bytea       NOT NULL,
    response        text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key_id, idempotency_key)
);
CREATE INDEX reservation_requests_by_age ON reservation_requests (created_at);

ALTER TABLE api_keys DROP CONSTRAINT api_keys_scope_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_scope_check
    CHECK (scope IN ('read', 'checkout', 'admin'));
