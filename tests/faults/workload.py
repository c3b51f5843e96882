"""The mixed load a POS fleet sends during a fault: a schedule of records, made from a seed.

Receipts and returns are keyed by ``transaction_no``, so one customer's sales spread over
every partition and only one transaction's records share an order. The mix has what the
contract makes hard: redeliveries (same content, new ``event_id``), conflicting duplicates,
returns, second returns, repeated return events, and returns sent before their sale
(sometimes two of them, which is when "the first return sent wins" is easy to get wrong).
Every returned sale is sent eventually, so no return waits out its wait.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from tests.documents import receipt_document, return_document

__all__ = ["Planned", "Workload", "make_workload"]

Stream = Literal["receipts", "returns"]


@dataclass(frozen=True, slots=True)
class Planned:
    """One record to send ``at`` seconds after the load starts."""

    at: float
    stream: Stream
    key: str
    document: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Workload:
    """The schedule, and the ids the checks look for in the database."""

    prefix: str
    customers: list[str]
    coupons: list[str]
    schedule: list[Planned]

    @property
    def duration(self) -> float:
        """When the last record is due."""
        return self.schedule[-1].at if self.schedule else 0.0


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _sale(rng: random.Random, tx: str, customer: str | None, coupons: list[str]) -> dict[str, Any]:
    chosen = [(c, rng.randint(1, 3)) for c in rng.sample(coupons, rng.randint(0, 2))]
    if chosen and rng.random() < 0.1:
        # The same coupon twice in one receipt: the contract sums them.
        chosen.append((chosen[0][0], 1))
    # Drawn in this order so that a seed gives the same workload as it always did.
    event_id = _random_uuid(rng)
    store_id = f"S{rng.randint(1, 40):04d}"
    terminal_id = f"T{rng.randint(1, 8):02d}"
    total = str(rng.randint(100, 20000))
    return receipt_document(
        customer,
        transaction_no=tx,
        coupons=chosen,
        points_used=rng.choice([0, 0, 50, 120]) if customer else 0,
        points_earned=rng.randint(0, 40) if customer else 0,
        total=total,
        event_id=event_id,
        store_id=store_id,
        terminal_id=terminal_id,
    )


def _return(rng: random.Random, tx: str) -> dict[str, Any]:
    return return_document(tx, event_id=_random_uuid(rng))


def _random_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def make_workload(*, sales: int, seconds: float, seed: int) -> Workload:
    """``sales`` sales spread evenly over ``seconds``, with their repeats and returns."""
    rng = random.Random(seed)
    prefix = _id("F")
    customers = [f"{prefix}-C{i:03d}" for i in range(max(10, sales // 50))]
    coupons = [f"{prefix}-CPN{i}" for i in range(6)]
    schedule: list[Planned] = []

    def plan(at: float, stream: Stream, document: dict[str, Any]) -> None:
        schedule.append(Planned(round(at, 3), stream, document["transaction_no"], document))

    for i in range(sales):
        tx = f"{prefix}-TX{i:06d}"
        customer = rng.choice(customers) if rng.random() > 0.08 else None
        sale = _sale(rng, tx, customer, coupons)
        at = seconds * i / sales
        returns_first = rng.random() < 0.08
        if returns_first:
            # The return desk is quicker than the receipt: one or two returns before the sale.
            first = _return(rng, tx)
            plan(at, "returns", first)
            if rng.random() < 0.5:
                plan(at + 0.2, "returns", _return(rng, tx))
            sale_at = at + rng.uniform(0.5, 2.5)
            plan(sale_at, "receipts", sale)
            if rng.random() < 0.5:
                # A second return sent just as the receipt lands.
                plan(sale_at + rng.uniform(0.0, 0.3), "returns", _return(rng, tx))
            continue
        plan(at, "receipts", sale)
        if rng.random() < 0.15:
            plan(at + rng.uniform(0.2, 3.0), "receipts", {**sale, "event_id": str(uuid.uuid4())})
        if rng.random() < 0.04:
            conflicting = {
                **sale,
                "event_id": str(uuid.uuid4()),
                "total": str(int(sale["total"]) + 1),
            }
            plan(at + rng.uniform(0.2, 3.0), "receipts", conflicting)
        if rng.random() < 0.3:
            first = _return(rng, tx)
            back_at = at + rng.uniform(0.3, 4.0)
            plan(back_at, "returns", first)
            if rng.random() < 0.1:
                plan(back_at + rng.uniform(0.1, 2.0), "returns", first)
            if rng.random() < 0.35:
                plan(back_at + rng.uniform(0.05, 2.0), "returns", _return(rng, tx))
    schedule.sort(key=lambda p: p.at)
    return Workload(prefix, customers, coupons, schedule)
