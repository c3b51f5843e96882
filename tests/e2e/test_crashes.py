"""SIGKILL in the middle of the work, then a restart: the state equals one clean pass."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

from punchcard_contract import event_id_for
from punchcard_platform.db import Database
from punchcard_platform.settings import Settings

from tests.documents import encode, receipt_document, return_document
from tests.e2e.conftest import StartService
from tests.helpers import consume, eventually, produce, unique_id


def _sales(count: int, customers: list[str], coupons: list[str], seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        receipt_document(
            rng.choice(customers),
            coupons=[(c, rng.randint(1, 3)) for c in rng.sample(coupons, rng.randint(0, 2))],
            points_used=rng.choice([0, 0, 50, 120]),
            points_earned=rng.randint(0, 40),
        )
        for _ in range(count)
    ]


async def _count(db: Database, sql: str, *args: object) -> int:
    async with db.connection() as conn:
        return int(await conn.fetchval(sql, *args))


async def _state(db: Database, customers: list[str]) -> dict[str, Any]:
    async with db.connection() as conn:
        usage = await conn.fetch(
            "SELECT customer_id, coupon_id, uses_made FROM coupon_usage "
            "WHERE customer_id = ANY($1) AND uses_made > 0",
            customers,
        )
        balances = await conn.fetch(
            "SELECT customer_id, balance FROM points_balances WHERE customer_id = ANY($1)",
            customers,
        )
        ledger = await conn.fetch(
            "SELECT customer_id, sum(points) AS total, count(*) AS entries FROM points_ledger "
            "WHERE customer_id = ANY($1) GROUP BY customer_id",
            customers,
        )
    return {
        "usage": {(r["customer_id"], r["coupon_id"]): r["uses_made"] for r in usage},
        "balances": {r["customer_id"]: r["balance"] for r in balances if r["balance"] != 0},
        "ledger": {r["customer_id"]: int(r["total"]) for r in ledger if r["total"] != 0},
        "entries": sum(r["entries"] for r in ledger),
    }


def _expected(sales: list[dict[str, Any]], returned: set[str]) -> dict[str, Any]:
    usage: Counter[tuple[str, str]] = Counter()
    balances: Counter[str] = Counter()
    entries = 0
    for sale in sales:
        customer, tx = sale["customer_id"], sale["transaction_no"]
        if tx not in returned:
            for coupon in sale["coupons"]:
                usage[(customer, coupon["coupon_id"])] += coupon["uses"]
            balances[customer] += sale["points_earned"] - sale["points_used"]
        booked = (sale["points_used"] > 0) + (sale["points_earned"] > 0)
        entries += booked * (2 if tx in returned else 1)
    return {
        "usage": {k: v for k, v in usage.items() if v},
        "balances": {k: v for k, v in balances.items() if v},
        "ledger": {k: v for k, v in balances.items() if v},
        "entries": entries,
    }


def _assert_same_state(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    for part in ("usage", "balances", "ledger", "entries"):
        if actual[part] != expected[part]:
            if isinstance(expected[part], dict):
                wrong = {
                    k: (actual[part].get(k), expected[part].get(k))
                    for k in set(actual[part]) | set(expected[part])
                    if actual[part].get(k) != expected[part].get(k)
                }
                raise AssertionError(f"{part}: (actual, expected) differ at {wrong}")
            raise AssertionError(f"{part}: {actual[part]} != {expected[part]}")


def _cause(cause: str) -> tuple[str, ...]:
    return () if cause == "sale" else (cause,)


async def _published_once_per_effect(settings: Settings, db: Database, keys: list[str]) -> None:
    """Every output event of the state reaches Kafka, and one effect never carries two ids.

    The relay deletes what it has published, so the events to expect are derived from the
    state itself: one PointsEvent per ledger entry, one CouponUsageEvent per coupon of a
    stored receipt, and one more per coupon of a returned one.
    """
    await eventually(
        lambda: _count(db, "SELECT count(*) = 0 FROM outbox WHERE key = ANY($1)", keys),
        what="outbox drained",
        timeout=60,
    )
    async with db.connection() as conn:
        ledger = await conn.fetch(
            "SELECT transaction_no, kind, cause FROM points_ledger WHERE customer_id = ANY($1)",
            keys,
        )
        uses = await conn.fetch(
            "SELECT transaction_no, returned_at IS NOT NULL AS returned, c->>'coupon_id' AS coupon"
            " FROM receipts, jsonb_array_elements(coupons) AS c WHERE customer_id = ANY($1)",
            keys,
        )
    expected = {
        settings.topics.points: {
            # A sale's own entries keep v1's ids; a return's add the return's event id.
            str(event_id_for(r["transaction_no"], "points", r["kind"], *_cause(r["cause"])))
            for r in ledger
        },
        settings.topics.coupon_usage: {
            str(event_id_for(r["transaction_no"], "coupon", r["coupon"], source))
            for r in uses
            for source in (("receipt", "return") if r["returned"] else ("receipt",))
        },
    }
    for topic, ids in expected.items():
        records = await consume(settings, topic, count=len(ids), timeout=60)
        missing = ids - {json.loads(r.value)["event_id"] for r in records}
        if missing:  # repeats after the crash took some of the count: read further
            wanted = len(records) + len(missing)
            records = await consume(settings, topic, count=wanted, timeout=60)
        seen: dict[str, dict[str, Any]] = {}
        effects: dict[tuple[Any, ...], str] = {}
        for record in records:
            event = json.loads(record.value)
            assert seen.setdefault(event["event_id"], event) == event, "a repeat changed content"
            effect = (
                event["transaction_no"],
                event.get("kind"),
                event.get("coupon_id"),
                event.get("source"),
                event.get("return_event_id"),
            )
            assert effects.setdefault(effect, event["event_id"]) == event["event_id"]
        assert set(seen) == ids


async def test_receipt_consumer_killed_mid_stream_ends_as_one_clean_pass(
    settings: Settings, db: Database, start_service: StartService
) -> None:
    """SIGKILL while batches are being applied loses nothing and doubles nothing."""
    customers = [unique_id("C") for _ in range(40)]
    coupons = [unique_id("CPN") for _ in range(5)]
    sales = _sales(3000, customers, coupons, seed=7)
    await produce(
        settings, settings.topics.receipts, [(s["customer_id"].encode(), encode(s)) for s in sales]
    )
    txs = [s["transaction_no"] for s in sales]
    stored = "SELECT count(*) FROM receipts WHERE transaction_no = ANY($1)"

    first = start_service("receipt-consumer")
    await eventually(
        lambda: _positive(_count(db, stored, txs)), interval=0.005, what="first receipts stored"
    )
    first.kill()
    assert await _count(db, stored, txs) < len(sales), "the crash came too late to mean anything"

    start_service("receipt-consumer")
    await eventually(
        lambda: _at_least(_count(db, stored, txs), len(sales)),
        timeout=120,
        what="every receipt stored",
    )
    _assert_same_state(await _state(db, customers), _expected(sales, returned=set()))
    await _published_once_per_effect(settings, db, customers)


async def test_returns_killed_mid_stream_ends_as_one_clean_pass(
    settings: Settings, db: Database, start_service: StartService
) -> None:
    """SIGKILL of the returns service, then a restart: every return applied exactly once."""
    customers = [unique_id("C") for _ in range(20)]
    coupons = [unique_id("CPN") for _ in range(3)]
    sales = _sales(600, customers, coupons, seed=11)
    await produce(
        settings, settings.topics.receipts, [(s["customer_id"].encode(), encode(s)) for s in sales]
    )
    start_service("receipt-consumer")
    txs = [s["transaction_no"] for s in sales]
    await eventually(
        lambda: _at_least(
            _count(db, "SELECT count(*) FROM receipts WHERE transaction_no = ANY($1)", txs),
            len(sales),
        ),
        timeout=60,
        what="sales stored",
    )
    returned = set(random.Random(3).sample(txs, 400))
    returns = [return_document(tx) for tx in sorted(returned)]
    repeats = [return_document(tx) for tx in sorted(returned)[:50]]
    await produce(
        settings,
        settings.topics.returns,
        [(r["transaction_no"].encode(), encode(r)) for r in [*returns, *repeats]],
    )
    decided = (
        "SELECT count(*) FROM return_events WHERE transaction_no = ANY($1) AND status <> 'pending'"
    )

    first = start_service("returns")
    await eventually(
        lambda: _positive(_count(db, decided, txs)), interval=0.005, what="first returns decided"
    )
    first.kill()
    start_service("returns")
    await eventually(
        lambda: _at_least(_count(db, decided, txs), len(returns) + len(repeats)),
        timeout=120,
        what="every return decided",
    )

    _assert_same_state(await _state(db, customers), _expected(sales, returned))
    accepted = await _count(
        db,
        "SELECT count(*) FROM return_events WHERE transaction_no = ANY($1) AND status = 'accepted'",
        txs,
    )
    assert accepted == len(returned)
    await _published_once_per_effect(settings, db, customers)


async def _positive(value: Any) -> bool:
    return bool(await value > 0)


async def _at_least(value: Any, expected: int) -> bool:
    return bool(await value >= expected)
