-- Points that expire (issue 19): lots, what burns took from them, and the debt.

-- A customer's balance is the sum of the ledger; the lots explain it: balance = the points
-- remaining in the lots less the debt (what a burn took beyond every lot, which the next
-- credits pay first). No CHECK (debt >= 0): the ledger writes balances and debts as deltas
-- through INSERT ... ON CONFLICT, whose proposed row (the delta) would be checked.
ALTER TABLE points_balances ADD COLUMN debt bigint NOT NULL DEFAULT 0;

ALTER TABLE points_ledger DROP CONSTRAINT points_ledger_kind_check;
ALTER TABLE points_ledger ADD CONSTRAINT points_ledger_kind_check
    CHECK (kind IN ('earn', 'burn', 'restore', 'revoke', 'expire'));

-- One lot per credit: a sale's earn (cause 'sale', seq 0), or each expiry a return's
-- restore gives back into (cause: the return's event id, seq 0, 1, ...).
CREATE TABLE points_lots (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id    text        NOT NULL,
    transaction_no text        NOT NULL,           -- the sale the points came from
    cause          text        NOT NULL,
    seq            integer     NOT NULL,
    points         bigint      NOT NULL CHECK (points >= 0),     -- credited
    remaining      bigint      NOT NULL CHECK (remaining >= 0),  -- not yet spent or expired
    expired        bigint      NOT NULL DEFAULT 0 CHECK (expired >= 0),
    expires_at     timestamptz,                                  -- exclusive; null: never
    occurred_at    timestamptz NOT NULL,
    UNIQUE (transaction_no, cause, seq)
);
-- A burn reads a customer's lots in the order it spends them.
CREATE INDEX points_lots_to_spend ON points_lots (customer_id, expires_at, occurred_at, id)
    WHERE remaining > 0;
-- The expiry job reads the lots due, soonest first.
CREATE INDEX points_lots_due ON points_lots (expires_at)
    WHERE remaining > 0 AND expires_at IS NOT NULL;

-- What a sale's burn took from which lot, in the order taken (lot_id null: from no lot,
-- the balance went negative). A return gives back the last taken first, each part into a
-- new lot expiring as the lot it came from (``restored`` counts what went back already).
CREATE TABLE points_allocations (
    transaction_no text        NOT NULL,
    seq            integer     NOT NULL,
    lot_id         bigint,
    points         bigint      NOT NULL CHECK (points > 0),
    restored       bigint      NOT NULL DEFAULT 0 CHECK (restored >= 0 AND restored <= points),
    expires_at     timestamptz,
    PRIMARY KEY (transaction_no, seq)
);

-- Balances booked before lots existed stand as one lot without expiry each (or as debt).
INSERT INTO points_lots (customer_id, transaction_no, cause, seq, points, remaining, occurred_at)
SELECT customer_id, '', 'opening balance of ' || customer_id, 0, balance, balance, now()
FROM points_balances WHERE balance > 0;
UPDATE points_balances SET debt = -balance WHERE balance < 0;
