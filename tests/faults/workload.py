"""The mixed load a POS fleet sends during a fault: a schedule of records, made from a seed.

Receipts and returns are keyed by ``transaction_no``, so one customer's sales spread over
every partition and only one transaction's records share an order. The mix has what the
contract makes hard: redeliveries (same content, new ``event_id``), conflicting duplicates,
returns, second returns, repeated return events, and returns sent before their sale
(sometimes two of them, which is when "the first return sent wins" is easy to get wrong).
About half of the returned sales come back in parts: one or two lines at a time, sometimes
in several returns, sometimes a quantity too many (``exceeds_remaining``) or a line the
sale does not have, sometimes the same ``return_id`` sent again under a new ``event_id``,
sometimes followed by a whole return of what is left. Every returned sale is sent
eventually, so no return waits out its wait.

Expiry: with ``expire_after``, a third of the customers get only limited-time points
(every sale of theirs carries ``points_expire_at``, and they never burn), a third get them
on about half of their sales and burn as usual, and a third never see an expiring point.
The moments are only known once the load starts (``Workload.dated``). A lot whose amount
depends on when it expires (one of a sale that is returned, or of a customer who burns)
expires ``expire_after`` seconds after the start, plus 0 to ``EXPIRY_SPREAD_SECONDS``:
after the load and its faults, once every record is applied. About half of the others (a
customer who never burns, a sale never returned: the lot loses all it earned, whenever)
expire during the load instead, some before their sale is even applied, so the expiry
job runs through the faults too (``model.py``).

Reservations (issue 20): the load also plans about 90 reservation calls, spread over it,
which the harness makes over HTTP (it cannot know a reservation's id before it is
granted). Two catalog coupons: a capped one (``CAPPED_TOTAL`` uses across customers,
``CAPPED_PER_CUSTOMER`` each) asked for by ten customers four or five times each, every
grant kept or consumed, so exactly the cap must be granted and the counts are exact; and
a held one (``HELD_PER_CUSTOMER`` each, no campaign-wide limit) whose reservations are
consumed, released, kept or left to lapse (``LAPSE_TTL_SECONDS``). A consumed one is
named by a sale of its own (``Workload.reserved_sale``: one use, no points), published by
the harness once the reservation is granted.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from tests.documents import receipt_document, return_document, sale_lines

__all__ = [
    "CAPPED_PER_CUSTOMER",
    "CAPPED_TOTAL",
    "HELD_PER_CUSTOMER",
    "LAPSE_TTL_SECONDS",
    "LONG_TTL_SECONDS",
    "Planned",
    "PlannedReservation",
    "Workload",
    "make_workload",
]

Stream = Literal["receipts", "returns"]
Fate = Literal["consume", "hold", "release", "lapse"]

CAPPED_TOTAL = 12
"""The capped coupon's ``total_uses_permitted``: far fewer than its reservation calls."""
CAPPED_PER_CUSTOMER = 3
"""The capped coupon's ``uses_permitted``: fewer than the calls of some of its customers."""
HELD_PER_CUSTOMER = 2
"""The other reserved coupon's ``uses_permitted`` (it has no campaign-wide limit)."""
LONG_TTL_SECONDS = 3600
"""A reservation that must outlive the scenario: it is consumed, released or kept."""
LAPSE_TTL_SECONDS = 2
"""A reservation left to lapse: gone long before the checks."""


@dataclass(frozen=True, slots=True)
class Planned:
    """One record to send ``at`` seconds after the load starts."""

    at: float
    stream: Stream
    key: str
    document: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PlannedReservation:
    """One reservation call ``at`` seconds after the load starts, and what becomes of it.

    ``consume``: a sale naming it follows (``transaction_no``); ``hold``: kept past the
    scenario; ``release``: released a moment later; ``lapse``: left to expire.
    """

    at: float
    customer_id: str
    coupon_id: str
    fate: Fate
    idempotency_key: str
    transaction_no: str

    @property
    def ttl_seconds(self) -> int:
        """How long it is held for."""
        return LAPSE_TTL_SECONDS if self.fate == "lapse" else LONG_TTL_SECONDS


@dataclass(frozen=True, slots=True)
class Workload:
    """The schedule, and the ids the checks look for in the database."""

    prefix: str
    customers: list[str]
    coupons: list[str]
    schedule: list[Planned]
    expire_after: float | None = None
    """Seconds from the load's start to the expiry of the lots that must wait for it."""
    expiry_offsets: dict[str, int] = field(default_factory=dict)
    """transaction_no -> seconds after the load's start when its points expire"""
    reservations: list[PlannedReservation] = field(default_factory=list)
    """The reservation calls the harness makes during the load, in time order"""
    capped_coupon: str = ""
    """In the catalog with ``CAPPED_TOTAL`` and ``CAPPED_PER_CUSTOMER``: only kept or consumed"""
    held_coupon: str = ""
    """In the catalog with ``HELD_PER_CUSTOMER``: consumed, released, kept or left to lapse"""

    def reserved_sale(self, planned: PlannedReservation, reservation_id: str) -> dict[str, Any]:
        """The sale that consumes a granted reservation: one use, no points, no return."""
        return receipt_document(
            planned.customer_id,
            transaction_no=planned.transaction_no,
            coupons=[],
            event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, planned.transaction_no)),
        ) | {
            "coupons": [
                {"coupon_id": planned.coupon_id, "uses": 1, "reservation_id": reservation_id}
            ]
        }

    @property
    def duration(self) -> float:
        """When the last record is due."""
        return self.schedule[-1].at if self.schedule else 0.0

    def dated(self, planned: Planned, started: datetime) -> dict[str, Any]:
        """The document as sent by a load that started at ``started``: a limited-time
        sale's ``points_expire_at`` is set from then (the same for every copy of it)."""
        offset = self.expiry_offsets.get(planned.key)
        if planned.stream != "receipts" or offset is None:
            return planned.document
        moment = started + timedelta(seconds=offset)
        return {**planned.document, "points_expire_at": moment.isoformat(timespec="seconds")}


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _sale(rng: random.Random, tx: str, customer: str | None, coupons: list[str]) -> dict[str, Any]:
    chosen = [(c, rng.randint(1, 3)) for c in rng.sample(coupons, rng.randint(0, 2))]
    if chosen and rng.random() < 0.1:
        # The same coupon twice in one receipt: the contract sums them.
        chosen.append((chosen[0][0], 1))
    # Drawn in a fixed order: a seed names one workload, so a failing run can be replayed.
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
        lines=_lines(rng),
    )


def _lines(rng: random.Random) -> list[dict[str, Any]]:
    """1 to 3 lines; now and then a weighed quantity, a free item or a discount line."""
    lines: list[tuple[int | str, str]] = []
    for _ in range(rng.randint(1, 3)):
        roll = rng.random()
        if roll < 0.05:
            lines.append((1, "0"))
        elif roll < 0.1:
            lines.append((1, str(-rng.randint(10, 200))))
        elif roll < 0.2:
            lines.append(("1.5", str(rng.randint(100, 3000))))
        else:
            lines.append((rng.randint(1, 3), str(rng.randint(100, 5000))))
    return sale_lines(*lines)


def _return(rng: random.Random, tx: str) -> dict[str, Any]:
    return return_document(tx, event_id=_random_uuid(rng))


def _partial_returns(rng: random.Random, tx: str, sale: dict[str, Any]) -> list[dict[str, Any]]:
    """One sale's returns of some lines, in the order the return desk sends them.

    Planned against what the load means to return; the model decides from the log what
    each one really meets, so a planned "too many" is just as welcome when it is not.
    """
    remaining = {n: Decimal(str(line["quantity"])) for n, line in enumerate(sale["lines"], 1)}
    documents: list[dict[str, Any]] = []
    for k in range(rng.choice([1, 1, 2, 2, 3])):
        left = [n for n, q in remaining.items() if q > 0]
        if not left:
            break
        named = rng.sample(left, min(len(left), rng.choice([1, 1, 2])))
        taken = {n: _some_of(rng, remaining[n]) for n in named}
        lines: list[tuple[int, int | str]] = [(n, str(q)) for n, q in taken.items()]
        roll = rng.random()
        if roll < 0.12:
            # One more than remains: exceeds_remaining, and nothing changes.
            n = named[0]
            lines[0] = (n, str(remaining[n] + 1))
        elif roll < 0.16:
            # A line the sale does not have: unknown_line, and nothing changes.
            lines.append((len(remaining) + 1, 1))
        else:
            for n, q in taken.items():
                remaining[n] -= q
        document = return_document(
            tx, event_id=_random_uuid(rng), lines=lines, return_id=f"{tx}-R{k}"
        )
        documents.append(document)
        if rng.random() < 0.15:
            # The return desk's retry: the same return_id and content, a new event_id.
            documents.append({**document, "event_id": _random_uuid(rng)})
    if rng.random() < 0.25:
        # The customer brings back the rest: a whole return of what is left.
        documents.append(_return(rng, tx))
    return documents


def _some_of(rng: random.Random, left: Decimal) -> Decimal:
    """All of what is left of a line, or a part of it."""
    parts = [left]
    if left > 1:
        parts.append(Decimal(1))
    if left != left.to_integral_value():
        parts.append(Decimal("0.5"))
    return rng.choice(parts)


def _random_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _returns_first(
    rng: random.Random, tx: str, sale: dict[str, Any], at: float
) -> list[tuple[float, Stream, dict[str, Any]]]:
    """The return desk is quicker than the receipt: one or two returns before the sale."""
    if rng.random() < 0.5:
        parts = _partial_returns(rng, tx, sale)
        sale_at = at + rng.uniform(0.5, 2.5)
        planned: list[tuple[float, Stream, dict[str, Any]]] = [
            (at + 0.2 * k, "returns", document) for k, document in enumerate(parts[:2])
        ]
        planned.append((sale_at, "receipts", sale))
        planned += [
            (sale_at + 0.1 * k + rng.uniform(0.0, 0.3), "returns", document)
            for k, document in enumerate(parts[2:])
        ]
        return planned
    planned = [(at, "returns", _return(rng, tx))]
    if rng.random() < 0.5:
        planned.append((at + 0.2, "returns", _return(rng, tx)))
    sale_at = at + rng.uniform(0.5, 2.5)
    planned.append((sale_at, "receipts", sale))
    if rng.random() < 0.5:
        # A second return sent just as the receipt lands.
        planned.append((sale_at + rng.uniform(0.0, 0.3), "returns", _return(rng, tx)))
    return planned


EXPIRY_SPREAD_SECONDS = 3
"""The late lots' expiry moments fall on ``expire_after`` and the seconds just after it."""

EARLY_FROM_SECONDS = 2
"""The earliest an early lot expires, after the load's start."""


def _limited_time(
    rng: random.Random,
    sale: dict[str, Any],
    index: int,
    late: dict[str, int],
    never_burn: set[str],
) -> dict[str, Any]:
    """The sale as its customer's third of the load has it (see the module's docstring);
    notes in ``late`` how many seconds after the late moment its points expire if they
    do, and in ``never_burn`` whether its customer never burns."""
    # Drawn whatever the third, from a generator of its own: the rest of a seed's load
    # stays what it was before the load had expiry.
    offset = rng.randint(0, EXPIRY_SPREAD_SECONDS)
    half = rng.random() < 0.5
    third = index % 3
    tx = sale["transaction_no"]
    if third == 0 or (third == 2 and half):
        return sale
    late[tx] = offset
    if third == 2:
        return sale
    never_burn.add(tx)
    return {**sale, "points_used": 0}


def _expiry_offsets(
    rng: random.Random,
    late: dict[str, int],
    never_burn: set[str],
    schedule: list[Planned],
    *,
    expire_after: float,
    seconds: float,
) -> dict[str, int]:
    """Seconds from the load's start to each lot's expiry: about half of those whose
    amount cannot depend on it come during the load, the rest after it."""
    returned = {p.key for p in schedule if p.stream == "returns"}
    offsets: dict[str, int] = {}
    for tx in sorted(late):
        early = rng.random() < 0.5
        if early and tx in never_burn and tx not in returned:
            offsets[tx] = rng.randint(EARLY_FROM_SECONDS, max(EARLY_FROM_SECONDS, int(seconds)))
        else:
            offsets[tx] = int(expire_after) + late[tx]
    return offsets


def make_workload(
    *, sales: int, seconds: float, seed: int, expire_after: float | None = None
) -> Workload:
    """``sales`` sales spread evenly over ``seconds``, with their repeats and returns.

    ``expire_after``: limited-time points for two thirds of the customers, expiring that
    many seconds after the load starts (and a few seconds more).
    """
    rng = random.Random(seed)
    expiry_rng = random.Random(f"{seed}-expiry")
    late: dict[str, int] = {}
    never_burn: set[str] = set()
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
        if customer is not None and expire_after is not None:
            sale = _limited_time(expiry_rng, sale, customers.index(customer), late, never_burn)
        at = seconds * i / sales
        returns_first = rng.random() < 0.08
        if returns_first:
            for when, stream, document in _returns_first(rng, tx, sale, at):
                plan(when, stream, document)
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
        if rng.random() < 0.15:
            # Returned in parts, some of them close enough to race on two instances.
            back_at = at + rng.uniform(0.3, 4.0)
            for document in _partial_returns(rng, tx, sale):
                plan(back_at, "returns", document)
                back_at += rng.uniform(0.0, 1.5)
        elif rng.random() < 0.18:
            first = _return(rng, tx)
            back_at = at + rng.uniform(0.3, 4.0)
            plan(back_at, "returns", first)
            if rng.random() < 0.1:
                plan(back_at + rng.uniform(0.1, 2.0), "returns", first)
            if rng.random() < 0.35:
                plan(back_at + rng.uniform(0.05, 2.0), "returns", _return(rng, tx))
    schedule.sort(key=lambda p: p.at)
    capped, held = f"{prefix}-CAP", f"{prefix}-HOLD"
    reservations = _reservations(
        random.Random(f"{seed}-reservations"),
        prefix=prefix,
        customers=customers,
        capped=capped,
        held=held,
        seconds=seconds,
    )
    offsets = (
        {}
        if expire_after is None
        else _expiry_offsets(
            expiry_rng, late, never_burn, schedule, expire_after=expire_after, seconds=seconds
        )
    )
    return Workload(
        prefix,
        customers,
        coupons,
        schedule,
        expire_after,
        offsets,
        reservations,
        capped,
        held,
    )


def _reservations(
    rng: random.Random,
    *,
    prefix: str,
    customers: list[str],
    capped: str,
    held: str,
    seconds: float,
) -> list[PlannedReservation]:
    """Calls spread over the load: the capped coupon asked for by ten customers four or five
    times each (about 45 calls for ``CAPPED_TOTAL`` uses: most are refused), kept or
    consumed, never released or left to lapse, so exactly ``CAPPED_TOTAL`` are granted;
    the other coupon's reservations meet every fate."""
    planned: list[PlannedReservation] = []

    def add(customer: str, coupon: str, fate: Fate) -> None:
        n = len(planned)
        planned.append(
            PlannedReservation(
                round(rng.uniform(0.5, seconds), 3),
                customer,
                coupon,
                fate,
                f"{prefix}-IK{n:04d}",
                f"{prefix}-RTX{n:04d}",
            )
        )

    for customer in rng.sample(customers, 10):
        for _ in range(rng.randint(4, 5)):
            add(customer, capped, rng.choice(["consume", "hold"]))
    fates: list[Fate] = ["consume", "consume", "release", "lapse", "hold"]
    for _ in range(40):
        add(rng.choice(customers), held, rng.choice(fates))
    planned.sort(key=lambda p: p.at)
    return planned
