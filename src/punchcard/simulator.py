"""A POS fleet simulator: many stores and terminals publishing receipts and returns.

Two halves, so the stream can be tested without a broker:

- ``FleetModel`` is pure: from a ``random.Random`` and a start time it plans the events a
  fleet would send (member and anonymous sales, coupons, points burned and earned,
  returns, returns sent twice, returns sent before their sale), as contract documents.
  It keeps each member's points, so a sale never burns more than the member holds, and
  it sends a return when the fleet's clock reaches it, minutes to days after its sale.
  Under the program's expiry rules (``PUNCHCARD_POINTS_LIFETIME`` or ``--points-lifetime``)
  a member holds points only until they expire, spends the soonest-expiring first, and a
  share of sales earns limited-time points (``points_expire_at``, ``--limited-time``).
- ``simulate`` publishes that stream with librdkafka (``confluent_kafka.Producer``): zstd
  batches, an idempotent producer with ``acks=all``, keys as CONTRACT.md section 1 says,
  paced to a rate or as fast as the broker takes them, with a progress line on stderr.

``punchcard simulate`` is ``add_arguments`` plus ``run_simulation``.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import math
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from random import Random
from typing import Any, Literal, TextIO, TypeVar

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from punchcard_contract.program import ExpiryRules, parse_duration, parse_lifetime
from punchcard_platform.errors import ConfigurationError, KafkaUnavailableError, PunchcardError
from punchcard_platform.settings import Settings

from punchcard.checkout import Checkout

__all__ = [
    "DEFAULT_COUPONS",
    "FleetModel",
    "PlannedEvent",
    "SimulationOptions",
    "SimulationSummary",
    "add_arguments",
    "options_from_args",
    "producer_config",
    "program_rules",
    "run_simulation",
    "simulate",
]

DEFAULT_COUPONS = ("TEA-10OFF", "COFFEE-2X", "BAKERY-5OFF", "WELCOME")

JST = timezone(timedelta(hours=9), "JST")

_IDENTIFIER_PART = re.compile(r"[A-Za-z0-9._:-]*")
_IDENTIFIER = re.compile(r"[A-Za-z0-9._:-]{1,64}")

# A small convenience-store catalogue: (JAN code, description, unit price in yen).
_CATALOGUE: tuple[tuple[str, str, Decimal], ...] = (
    ("4901234567890", "Green tea 500ml", Decimal(150)),
    ("4901234567891", "Barley tea 600ml", Decimal(140)),
    ("4901234567892", "Canned coffee 185g", Decimal(130)),
    ("4901234567893", "Cafe latte 240ml", Decimal(198)),
    ("4901234567894", "Onigiri salmon", Decimal(160)),
    ("4901234567895", "Onigiri tuna mayo", Decimal(150)),
    ("4901234567896", "Melon pan", Decimal(138)),
    ("4901234567897", "Curry bread", Decimal(168)),
    ("4901234567898", "Bento karaage", Decimal(598)),
    ("4901234567899", "Sandwich egg", Decimal(328)),
    ("4901234567900", "Cup noodles", Decimal(236)),
    ("4901234567901", "Chocolate bar", Decimal(118)),
    ("4901234567902", "Potato chips", Decimal(158)),
    ("4901234567903", "Mineral water 2l", Decimal(108)),
    ("4901234567904", "Umbrella", Decimal(880)),
    ("4901234567905", "Batteries AA x4", Decimal(548)),
)
_RETURN_REASONS = ("changed mind", "damaged", "wrong item", "expired", "duplicate purchase", None)
_COUPON_DISCOUNT = Decimal(50)  # yen off per coupon use: the POS's business, not Punchcard's
_YEN_PER_POINT_EARNED = 100
# A terminal rings up a sale about every two minutes: the fleet's clock moves by this over
# (stores x terminals) per receipt, whatever the publishing rate (a time-lapse at full speed).
_TERMINAL_SECONDS_PER_SALE = 120
# Goods come back 10 minutes to 2 days after the sale (log-uniform: median about 3 hours);
# the desk's second attempt at the same return 1 minute to 1 day after the first.
_RETURN_DELAY = (timedelta(minutes=10), timedelta(days=2))
_REPEAT_DELAY = (timedelta(minutes=1), timedelta(days=1))
_MAX_BURN = 500


@dataclass(frozen=True)
class SimulationOptions:
    """What to simulate and how fast; the CLI and code (demo, benchmarks) both build one.

    ``receipts`` and ``duration`` bound the run (whichever is reached first; at least one
    must be set). ``rate`` is receipts per second, ``0`` as fast as possible. Shares are
    probabilities: ``anonymous_share`` of sales, ``return_share`` of sales returned,
    ``repeat_return_share`` and ``early_return_share`` of those returns,
    ``partial_return_share`` of returned sales that come back in parts; with a
    ``Checkout`` given to ``simulate``, ``reserve_share`` of member sales with coupons
    reserve their uses first and name the reservations, and ``lapse_share`` of those also
    leave one more hold to lapse (5 s). ``run_tag`` goes
    into every ``transaction_no`` so two runs never send the same one; None means a fresh
    random tag per run. ``points_lifetime`` is the program's (None: the settings'), which
    the fleet must know to spend only points that still exist; ``limited_time_share`` of
    member sales earn points that expire ``limited_time`` after the sale instead.
    """

    receipts: int | None = 1000
    duration: float | None = None
    rate: float = 0.0
    stores: int = 20
    terminals_per_store: int = 4
    customers: int = 10_000
    coupons: tuple[str, ...] = DEFAULT_COUPONS
    anonymous_share: float = 0.3
    return_share: float = 0.05
    repeat_return_share: float = 0.2
    early_return_share: float = 0.1
    partial_return_share: float = 0.5
    reserve_share: float = 0.0
    lapse_share: float = 0.0
    seed: int | None = None
    customer_prefix: str = "C"
    run_tag: str | None = None
    points_lifetime: str | None = None
    limited_time_share: float = 0.0
    limited_time: str = "PT2M"

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise ValueError("; ".join(problems))

    def _problems(self) -> Iterator[str]:
        if self.receipts is None and self.duration is None:
            yield "give a number of receipts or a duration"
        if self.receipts is not None and self.receipts < 0:
            yield "receipts must be 0 or more"
        if self.duration is not None and not self.duration > 0:
            yield "duration must be more than 0 seconds"
        if not self.rate >= 0:
            yield "rate must be 0 (as fast as possible) or more"
        for name in ("stores", "terminals_per_store", "customers"):
            if getattr(self, name) < 1:
                yield f"{name} must be at least 1"
        for name in (
            "anonymous_share",
            "return_share",
            "repeat_return_share",
            "early_return_share",
            "partial_return_share",
            "limited_time_share",
            "reserve_share",
            "lapse_share",
        ):
            if not 0 <= getattr(self, name) <= 1:
                yield f"{name} must be between 0 and 1"
        for coupon_id in self.coupons:
            if not _IDENTIFIER.fullmatch(coupon_id):
                yield f"coupon id {coupon_id!r} is not a contract identifier"
        longest_customer = f"{self.customer_prefix}{self.customers - 1:06d}"
        if not _IDENTIFIER_PART.fullmatch(self.customer_prefix) or len(longest_customer) > 64:
            yield "customer_prefix must use A-Z a-z 0-9 . _ : - and leave ids of 64 at most"
        if self.run_tag is not None and not _IDENTIFIER.fullmatch(self.run_tag):
            yield "run_tag must be 1 to 64 of A-Z a-z 0-9 . _ : -"
        yield from self._expiry_problems()

    def _expiry_problems(self) -> Iterator[str]:
        try:
            if self.points_lifetime is not None:
                parse_lifetime(self.points_lifetime)
            parse_duration(self.limited_time)
        except ValueError as exc:
            yield f"points_lifetime and limited_time must be ISO 8601 durations: {exc}"


@dataclass(frozen=True)
class PlannedEvent:
    """One record the fleet will publish: which topic, its key and its document."""

    kind: Literal["receipt", "return"]
    key: str
    document: dict[str, Any]
    repeated: bool = False
    early: bool = False

    @property
    def partial(self) -> bool:
        """A return of some lines of its sale (it names them)."""
        return self.kind == "return" and "lines" in self.document

    def value(self) -> bytes:
        """The record value, UTF-8 JSON as the contract wants."""
        return orjson.dumps(self.document)


@dataclass
class _Tally:
    receipts: int = 0
    anonymous: int = 0
    coupon_uses: int = 0
    points_burned: int = 0
    points_earned: int = 0
    limited_time_points: int = 0
    returns: int = 0
    repeated_returns: int = 0
    early_returns: int = 0
    partial_returns: int = 0
    resent_refunds: int = 0
    reservations: int = 0
    refused_reservations: int = 0
    lapsing_reservations: int = 0

    def count(self, event: PlannedEvent) -> None:
        if event.kind == "receipt":
            document = event.document
            self.receipts += 1
            self.anonymous += document.get("customer_id") is None
            self.coupon_uses += sum(int(c["uses"]) for c in document["coupons"])
            self.points_burned += int(document["points_used"])
            self.points_earned += int(document["points_earned"])
            if "points_expire_at" in document:
                self.limited_time_points += int(document["points_earned"])
        else:
            self.returns += 1
            self.repeated_returns += event.repeated
            self.early_returns += event.early
            self.partial_returns += event.partial
            self.resent_refunds += event.partial and event.repeated


@dataclass(frozen=True)
class SimulationSummary:
    """What a run published (every record acknowledged by the broker) and how fast."""

    receipts: int
    anonymous: int
    coupon_uses: int
    points_burned: int
    points_earned: int
    returns: int
    repeated_returns: int
    early_returns: int
    partial_returns: int
    resent_refunds: int
    """Refunds of some lines sent again under their return_id: redeliveries, no outcome."""
    elapsed_seconds: float
    limited_time_points: int = 0
    """Points earned with the sale's own ``points_expire_at`` (part of ``points_earned``)."""
    reservations: int = 0
    """Reservations made before sales and named in their receipts."""
    refused_reservations: int = 0
    """Reservation calls refused (the coupon sold out, exhausted, ...): sold all the same."""
    lapsing_reservations: int = 0
    """Holds left to lapse (never consumed nor released)."""

    @property
    def events(self) -> int:
        """Receipts and returns together: the records published."""
        return self.receipts + self.returns

    @property
    def receipts_per_second(self) -> float:
        """The achieved receipt rate, comparable with ``--rate``."""
        return self.receipts / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    @property
    def events_per_second(self) -> float:
        """The achieved record rate, receipts and returns together."""
        return self.events / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    def render(self) -> str:
        """The end-of-run report the CLI prints."""
        return "\n".join(
            (
                f"receipts          {self.receipts}",
                f"  anonymous       {self.anonymous}",
                f"  coupon uses     {self.coupon_uses}",
                f"  points burned   {self.points_burned}",
                f"  points earned   {self.points_earned}",
                f"    limited-time  {self.limited_time_points} (points_expire_at)",
                f"returns           {self.returns}",
                f"  repeated        {self.repeated_returns}",
                f"  early           {self.early_returns}",
                f"  of some lines   {self.partial_returns}",
                f"  sent again      {self.resent_refunds} (same return_id: no new outcome)",
                f"reservations      {self.reservations} named in receipts, "
                f"{self.refused_reservations} refused, {self.lapsing_reservations} left to lapse",
                f"elapsed           {self.elapsed_seconds:.2f}s",
                f"rate              {self.receipts_per_second:.1f} receipts/s, "
                f"{self.events_per_second:.1f} records/s",
            )
        )


@dataclass
class _Sale:
    transaction_no: str
    store_id: str
    occurred_at: datetime
    quantities: tuple[int, ...] = ()


@dataclass
class FleetModel:
    """The fleet's behaviour, pure: every draw comes from ``rng``, every time from ``start``.

    The same options, seed, start and run tag give the same stream, event ids included,
    so tests (and benchmark comparisons) can rely on it. Receipts are planned one at a
    time with ``next_receipt``; the returns still owed at the end come from ``drain``.
    ``rules`` are the program's expiry rules; ``now`` is when the stream is published:
    points that expire before it are gone by the time Punchcard books a burn, whatever
    the fleet's clock says.
    """

    options: SimulationOptions
    rng: Random
    start: datetime
    run_tag: str
    rules: ExpiryRules = field(default_factory=ExpiryRules)
    now: datetime | None = None
    _clock: datetime = field(init=False)
    _gap_span_us: int = field(init=False)
    _sequence: dict[tuple[int, int], int] = field(init=False, default_factory=dict)
    # Returns not yet sent, by the time they happen (the counter keeps equal times in order).
    _due: list[tuple[datetime, int, PlannedEvent]] = field(init=False, default_factory=list)
    _queued: int = field(init=False, default=0)
    _refunds: int = field(init=False, default=0)
    # Per member, the points the member may still spend: see ``_receipt``. Those that
    # never expire as a count; those that do as a heap of (expires_at, points).
    _spendable: dict[str, int] = field(init=False, default_factory=dict)
    _expiring: dict[str, list[tuple[datetime, int]]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("start must carry a time zone")
        if not _IDENTIFIER.fullmatch(self.run_tag):
            raise ValueError("run_tag must be 1 to 64 of A-Z a-z 0-9 . _ : -")
        self._clock = self.start.astimezone(JST)
        self._gap_span_us = int(2 * _mean_seconds_between_sales(self.options) * 1_000_000)
        self._limited_time = parse_duration(self.options.limited_time)

    def plan(self, receipts: int) -> Iterator[PlannedEvent]:
        """The whole stream for ``receipts`` sales, owed returns included."""
        for _ in range(receipts):
            yield from self.next_receipt()
        yield from self.drain()

    def next_receipt(self) -> list[PlannedEvent]:
        """One sale, with an early return before it and the returns now due after it.

        A return is sent when the fleet's clock reaches its time, so in the stream it
        follows its sale by as many sales as the fleet rings up in between. An early
        return is the exception: its sale's receipt was held up (an offline terminal), so
        the return reaches Punchcard first and must wait for it.
        """
        returned = self.options.return_share > 0 and (self.rng.random() < self.options.return_share)
        sale, receipt = self._receipt(returned=returned)
        events: list[PlannedEvent] = []
        if returned:
            early = self.rng.random() < self.options.early_return_share
            first_at = sale.occurred_at + self._delay(_RETURN_DELAY)
            parts = self._parts(sale) if sale.quantities else None
            first = self._return(sale, first_at, early=early, lines=parts[0] if parts else None)
            if early:
                events.append(first)
            else:
                self._queue(first_at, first)
            at = first_at
            for lines in (parts or [])[1:]:
                at += self._delay(_REPEAT_DELAY)
                self._queue(at, self._return(sale, at, lines=lines))
            if self.rng.random() < self.options.repeat_return_share:
                again_at = at + self._delay(_REPEAT_DELAY)
                # The desk tries again: a whole sale is refused (already_returned); a refund
                # of some lines is sent again under its return_id (a redelivery).
                again = (
                    {**first.document, "event_id": self._event_id()}
                    if parts
                    else self._return(sale, again_at).document
                )
                self._queue(
                    again_at, PlannedEvent("return", sale.transaction_no, again, repeated=True)
                )
        events.append(receipt)
        while self._due and self._due[0][0] <= self._clock:
            events.append(heapq.heappop(self._due)[2])
        return events

    def _parts(self, sale: _Sale) -> list[list[tuple[int, int]]] | None:
        """How a sale comes back in parts, or None for all of it at once.

        One or two of its lines, each whole or a unit at a time, and now and then a line
        asked for once more than was sold (the desk's miscount: ``exceeds_remaining``).
        """
        rng = self.rng
        if rng.random() >= self.options.partial_return_share:
            return None
        numbers = list(range(1, len(sale.quantities) + 1))
        chosen = sorted(rng.sample(numbers, min(len(numbers), rng.choice((1, 2)))))
        parts: list[list[tuple[int, int]]] = []
        for line_no in chosen:
            quantity = sale.quantities[line_no - 1]
            if quantity > 1 and rng.random() < 0.5:
                parts += [[(line_no, 1)], [(line_no, quantity - 1)]]
            else:
                parts.append([(line_no, quantity)])
        if rng.random() < 0.1:
            line_no = chosen[0]
            parts.insert(0, [(line_no, sale.quantities[line_no - 1] + 1)])
        return parts

    def drain(self) -> Iterator[PlannedEvent]:
        """Every return still owed (its time is after the last sale), in time order."""
        while self._due:
            yield heapq.heappop(self._due)[2]

    def _queue(self, at: datetime, event: PlannedEvent) -> None:
        self._queued += 1
        heapq.heappush(self._due, (at, self._queued, event))

    def _delay(self, bounds: tuple[timedelta, timedelta]) -> timedelta:
        low, high = (b.total_seconds() for b in bounds)
        return timedelta(seconds=round(math.exp(self.rng.uniform(math.log(low), math.log(high)))))

    def _receipt(self, *, returned: bool) -> tuple[_Sale, PlannedEvent]:
        # Draws use rng.random() and precomputed tables: at --rate 0 this is the hot loop.
        rng, options = self.rng, self.options
        random = rng.random
        self._clock += timedelta(microseconds=int(random() * self._gap_span_us))
        clock = self._clock
        store = int(random() * options.stores)
        terminal = int(random() * options.terminals_per_store)
        sequence = self._sequence.get((store, terminal), 0) + 1
        self._sequence[store, terminal] = sequence
        store_id, terminal_id = _store_id(store), _terminal_id(terminal)
        transaction_no = (
            f"{store_id}-{terminal_id}-{clock.year:04d}{clock.month:02d}{clock.day:02d}"
            f"-{self.run_tag}-{sequence:06d}"
        )
        customer_id = None
        if random() >= options.anonymous_share:
            # Squaring skews towards low numbers: some customers shop far more than others.
            number = int(options.customers * random() ** 2)
            customer_id = f"{options.customer_prefix}{number:06d}"

        lines = []
        subtotal = Decimal(0)
        for _ in range(_pick(random, _LINE_COUNTS)):
            line, amount = _pick(random, _LINES)
            lines.append(dict(line))
            subtotal += amount
        coupons = self._coupons(member=customer_id is not None)
        discount = _COUPON_DISCOUNT * sum(c["uses"] for c in coupons)
        points_used = 0
        points_earned = 0
        limited: datetime | None = None
        if customer_id is not None:
            # A member spends only points already held: what earlier sales earned, less
            # what was spent. Points a sale earns are usable from the next sale on. The
            # points of a sale that will be returned are never counted as held (the
            # return takes them back), nor are points a return gives back, so however
            # late a return is applied, the member's balance never drops below zero (when
            # nothing expires; see ``_held``).
            ceiling = min(self._held(customer_id, clock), _MAX_BURN, int(subtotal))
            if ceiling > 0 and random() < _BURN_SHARE:
                points_used = int(random() * ceiling) + 1
                self._spend(customer_id, points_used)
            total = max(subtotal - discount - points_used, Decimal(0))
            points_earned = int(total) // _YEN_PER_POINT_EARNED
            # Drawn only when asked for, so a seed's stream without them stays as it was.
            if options.limited_time_share and random() < options.limited_time_share:
                limited = self._limited_time.after(clock, self.rules.zone)
                expires_at: datetime | None = limited
            else:
                limited, expires_at = None, self.rules.expires_at(clock)
            if not returned:
                self._credit(customer_id, points_earned, expires_at)
        else:
            total = max(subtotal - discount, Decimal(0))

        document: dict[str, Any] = {
            "schema_version": 1,
            "event_id": self._event_id(),
            "transaction_no": transaction_no,
            "store_id": store_id,
            "terminal_id": terminal_id,
            "customer_id": customer_id,
            "occurred_at": clock.isoformat(timespec="seconds"),
            "currency": "JPY",
            "total": str(total),
            "lines": lines,
            "coupons": coupons,
            "points_used": points_used,
            "points_earned": points_earned,
        }
        if limited is not None:
            document["points_expire_at"] = limited.isoformat(timespec="seconds")
        event = PlannedEvent("receipt", customer_id or transaction_no, document)
        quantities = tuple(line["quantity"] for line in lines)
        return _Sale(transaction_no, store_id, clock, quantities), event

    def _held(self, customer_id: str, at: datetime) -> int:
        """The points the member can spend at ``at``; a lot that expires before the stream
        is published is gone too. Under expiry a balance may still go below zero, as the
        contract allows: Punchcard spends the soonest-expiring lot, which may be that of
        a sale the fleet will return and so never counted as held."""
        lots = self._expiring.get(customer_id)
        held = self._spendable.get(customer_id, 0)
        if not lots:
            return held
        horizon = at if self.now is None or self.now < at else self.now
        while lots and lots[0][0] <= horizon:
            heapq.heappop(lots)
        return held + sum(points for _, points in lots)

    def _spend(self, customer_id: str, points: int) -> None:
        """Spend held points as Punchcard does: soonest-expiring first, then the rest."""
        lots = self._expiring.get(customer_id, [])
        while points and lots:
            expires_at, held = heapq.heappop(lots)
            if held > points:
                heapq.heappush(lots, (expires_at, held - points))
            points -= min(held, points)
        self._spendable[customer_id] = self._spendable.get(customer_id, 0) - points

    def _credit(self, customer_id: str, points: int, expires_at: datetime | None) -> None:
        if not points:
            return
        if expires_at is None:
            self._spendable[customer_id] = self._spendable.get(customer_id, 0) + points
        else:
            heapq.heappush(self._expiring.setdefault(customer_id, []), (expires_at, points))

    def _coupons(self, *, member: bool) -> list[dict[str, Any]]:
        rng, coupons = self.rng, self.options.coupons
        if not coupons or rng.random() >= (_MEMBER_COUPON_SHARE if member else 0.1):
            return []
        count = min(len(coupons), _pick(rng.random, _COUPONS_PER_SALE))
        chosen = rng.sample(coupons, count) if count > 1 else [_pick(rng.random, coupons)]
        return [{"coupon_id": c, "uses": _pick(rng.random, _USES_PER_COUPON)} for c in chosen]

    def _return(
        self,
        sale: _Sale,
        occurred_at: datetime,
        *,
        early: bool = False,
        lines: list[tuple[int, int]] | None = None,
    ) -> PlannedEvent:
        rng = self.rng
        document: dict[str, Any] = {
            "schema_version": 1,
            "event_id": self._event_id(),
            "transaction_no": sale.transaction_no,
            "store_id": sale.store_id,
            "terminal_id": _terminal_id(rng.randrange(self.options.terminals_per_store)),
            "occurred_at": occurred_at.isoformat(timespec="seconds"),
            "reason": rng.choice(_RETURN_REASONS),
        }
        if lines is not None:
            self._refunds += 1
            document["return_id"] = f"{sale.store_id}-R{self._refunds:06d}"
            document["lines"] = [{"line_no": n, "quantity": q} for n, q in lines]
        return PlannedEvent("return", sale.transaction_no, document, early=early)

    def _event_id(self) -> str:
        # A version-4 UUID (RFC 9562 layout) from the seeded generator, so a seed fixes the
        # ids too; formatted by hand because uuid.UUID is slow in the hot loop.
        bits = self.rng.getrandbits(128) & _UUID_CLEAR | _UUID_SET
        text = f"{bits:032x}"
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)
_LINE_COUNTS = (1, 1, 2, 2, 3, 4, 5, 8)
_QUANTITIES = (1, 1, 1, 1, 2, 2, 3)
_COUPONS_PER_SALE = (1, 1, 1, 2)
_USES_PER_COUPON = (1, 1, 1, 1, 2)
_MEMBER_COUPON_SHARE = 0.35
_BURN_SHARE = 0.15

# Every (product, quantity) line, its amount computed once with Decimal.
_LINES: tuple[tuple[dict[str, Any], Decimal], ...] = tuple(
    (
        {
            "sku": sku,
            "description": description,
            "quantity": quantity,
            "unit_price": str(unit_price),
            "amount": str(unit_price * quantity),
        },
        unit_price * quantity,
    )
    for sku, description, unit_price in _CATALOGUE
    for quantity in _QUANTITIES
)

T = TypeVar("T")


def _mean_seconds_between_sales(options: SimulationOptions) -> float:
    return _TERMINAL_SECONDS_PER_SALE / (options.stores * options.terminals_per_store)


def _default_start(
    options: SimulationOptions, now: datetime, *, expiring: bool = False
) -> datetime:
    """Where the fleet's clock starts so the run's sales and returns lie in the past.

    The clock is a time-lapse (see ``_TERMINAL_SECONDS_PER_SALE``): 3,000 receipts of the
    default fleet span about 75 minutes of trading, and the last returns come up to two
    days after the last sale. Starting that far back keeps every timestamp before now.
    When points can expire (``expiring``), the sales end about now instead, so their points live
    on for their lifetime rather than expiring as they land; returns then come later than
    now, dated as the desk will date them.
    """
    expected = options.receipts
    if expected is None and options.duration is not None and options.rate > 0:
        expected = int(options.duration * options.rate)
    span = timedelta(seconds=(expected or 0) * _mean_seconds_between_sales(options))
    if expiring:
        return now - span
    return now - span - _RETURN_DELAY[1] - _REPEAT_DELAY[1]


def _pick(random: Callable[[], float], choices: Sequence[T]) -> T:
    return choices[int(random() * len(choices))]


def _store_id(number: int) -> str:
    return f"S{number + 1:04d}"


def _terminal_id(number: int) -> str:
    return f"T{number + 1:02d}"


def producer_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings: zstd, idempotent, acks=all, and the PUNCHCARD_KAFKA_* security.

    ``murmur2_random`` places a key on the same partition as the Java client and aiokafka
    do, so simulated records land where a real POS's would (librdkafka's default differs).
    """
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "client.id": f"{settings.kafka_client_id}-simulator",
        "compression.type": "zstd",
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        "linger.ms": 20,
        "batch.num.messages": 10_000,
        "message.timeout.ms": 120_000,
        "security.protocol": settings.kafka_security_protocol.lower(),
    }
    if settings.kafka_sasl_mechanism:
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
    if settings.kafka_sasl_username:
        config["sasl.username"] = settings.kafka_sasl_username
    if settings.kafka_sasl_password:
        config["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_ssl_cafile:
        config["ssl.ca.location"] = str(settings.kafka_ssl_cafile)
    return config


class _Publisher:
    """librdkafka behind an async face: produce, serve callbacks, flush off the loop."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        try:
            self._producer = Producer(producer_config(settings))
        except KafkaException as exc:
            raise ConfigurationError(f"invalid Kafka settings for the simulator: {exc}") from exc
        self._failures: list[str] = []
        self.acknowledged = 0

    async def check_topics(self, *topics: str) -> None:
        """Fail fast with a clear message: no broker, or topics not created."""
        try:
            metadata = await asyncio.to_thread(self._producer.list_topics, None, 15.0)
        except KafkaException as exc:
            raise KafkaUnavailableError(
                f"no Kafka broker answers at {self._settings.kafka_bootstrap_servers}: {exc}. "
                "Check PUNCHCARD_KAFKA_BOOTSTRAP_SERVERS and the PUNCHCARD_KAFKA_* security "
                "settings."
            ) from exc
        missing = [t for t in topics if t not in metadata.topics]
        deadline = time.monotonic() + 10.0
        while missing and time.monotonic() < deadline:
            # A topic created a moment ago may not be in every broker's metadata yet.
            await asyncio.sleep(0.2)
            metadata = await asyncio.to_thread(self._producer.list_topics, None, 15.0)
            missing = [t for t in topics if t not in metadata.topics]
        if missing:
            raise ConfigurationError(
                f"topic {', '.join(missing)} does not exist: run `punchcard topics create`"
            )

    async def send(self, topic: str, key: str, value: bytes) -> None:
        """Queue one record; when librdkafka's queue is full, wait for room off the loop."""
        while True:
            try:
                self._producer.produce(topic, value, key.encode(), on_delivery=self._delivered)
            except BufferError:
                await asyncio.to_thread(self._producer.poll, 0.05)
            else:
                return

    def serve_callbacks(self) -> None:
        """Run due delivery callbacks without waiting."""
        self._producer.poll(0)
        self._raise_failures()

    async def flush(self, timeout: float) -> None:
        """Wait (off the loop) until every queued record is acknowledged or failed."""
        remaining = await asyncio.to_thread(self._producer.flush, timeout)
        self._raise_failures()
        if remaining:
            raise KafkaUnavailableError(
                f"{remaining} records were still unacknowledged after {timeout:.0f}s"
            )

    async def close(self, *, abandon: bool) -> None:
        """Stop librdkafka's threads; ``abandon`` drops what is still queued (after a failure)."""
        if abandon:
            self._producer.purge(blocking=False)
        await asyncio.to_thread(self._producer.close)

    def _delivered(self, error: KafkaError | None, _: Message) -> None:
        if error is None:
            self.acknowledged += 1
        else:
            self._failures.append(str(error))

    def _raise_failures(self) -> None:
        if self._failures:
            raise PunchcardError(
                f"{len(self._failures)} records were not published; first: {self._failures[0]}"
            )


class _Progress:
    """A single updating stderr line; nothing at all when ``stream`` is None."""

    def __init__(self, options: SimulationOptions, stream: TextIO | None) -> None:
        self._options = options
        self._stream = stream
        self._drawn_at = 0.0

    def update(self, tally: _Tally, elapsed: float, *, force: bool = False) -> None:
        if self._stream is None:
            return
        now = time.monotonic()
        if not force and now - self._drawn_at < 0.2:
            return
        self._drawn_at = now
        fractions = []
        if self._options.receipts:
            fractions.append(tally.receipts / self._options.receipts)
        if self._options.duration:
            fractions.append(elapsed / self._options.duration)
        done = min(max(fractions, default=1.0), 1.0)
        width = 30
        filled = int(done * width)
        rate = tally.receipts / elapsed if elapsed > 0 else 0.0
        self._stream.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done:4.0%}  "
            f"{tally.receipts} receipts  {tally.returns} returns  "
            f"{rate:,.0f}/s  {elapsed:.1f}s "
        )
        self._stream.flush()

    def finish(self) -> None:
        if self._stream is not None:
            self._stream.write("\n")
            self._stream.flush()


async def simulate(
    settings: Settings,
    options: SimulationOptions,
    *,
    progress: TextIO | None = None,
    start: datetime | None = None,
    checkout: Checkout | None = None,
) -> SimulationSummary:
    """Publish a fleet's receipts and returns; return once the broker acknowledged them all.

    Used by ``punchcard simulate``, the demo and the benchmarks. ``progress`` is where the
    progress line goes (None: silent). ``start`` is the business clock's start (default:
    far enough back that the run's sales and returns all lie in the past). Raises
    ``KafkaUnavailableError`` when no broker answers or records cannot be delivered,
    ``ConfigurationError`` when the topics do not exist. ``checkout``, if given, makes the
    reservations of ``reserve_share`` and ``lapse_share`` (the planned stream is the same
    with or without it, but for the ``reservation_id`` it adds).
    """
    topics = settings.topics
    rules = program_rules(settings, options)
    now = datetime.now(UTC)
    expiring = rules.lifetime is not None or options.limited_time_share > 0
    model = FleetModel(
        options,
        Random(options.seed),  # noqa: S311 - a reproducible simulation, not a secret
        start or _default_start(options, now, expiring=expiring),
        options.run_tag or secrets.token_hex(4),
        rules,
        now,
    )
    publisher = _Publisher(settings)
    try:
        await publisher.check_topics(topics.receipts, topics.returns)
        tally, elapsed = await _publish_stream(
            publisher, model, settings, options, progress, checkout=checkout
        )
    except BaseException:
        await publisher.close(abandon=True)
        raise
    await publisher.close(abandon=False)
    return SimulationSummary(
        receipts=tally.receipts,
        anonymous=tally.anonymous,
        coupon_uses=tally.coupon_uses,
        points_burned=tally.points_burned,
        points_earned=tally.points_earned,
        returns=tally.returns,
        repeated_returns=tally.repeated_returns,
        early_returns=tally.early_returns,
        partial_returns=tally.partial_returns,
        resent_refunds=tally.resent_refunds,
        elapsed_seconds=elapsed,
        limited_time_points=tally.limited_time_points,
        reservations=tally.reservations,
        refused_reservations=tally.refused_reservations,
        lapsing_reservations=tally.lapsing_reservations,
    )


def program_rules(settings: Settings, options: SimulationOptions) -> ExpiryRules:
    """The program's expiry rules as the services apply them: the settings', with the
    options' lifetime when they name one (it must be the one the services run with)."""
    if options.points_lifetime is None:
        return settings.expiry_rules
    return settings.model_copy(update={"points_lifetime": options.points_lifetime}).expiry_rules


async def _publish_stream(
    publisher: _Publisher,
    model: FleetModel,
    settings: Settings,
    options: SimulationOptions,
    progress: TextIO | None,
    *,
    checkout: Checkout | None,
) -> tuple[_Tally, float]:
    topics = settings.topics
    bar = _Progress(options, progress)
    tally = _Tally()
    # Its own generator, so the fleet's stream is the same with reservations or without.
    chooser = Random(None if options.seed is None else options.seed + 1)  # noqa: S311
    began = time.monotonic()
    deadline = began + options.duration if options.duration else None

    async def publish(event: PlannedEvent) -> None:
        if checkout is not None and event.kind == "receipt":
            await _hold_before_sale(event.document, checkout, chooser, options, tally)
        topic = topics.receipts if event.kind == "receipt" else topics.returns
        await publisher.send(topic, event.key, event.value())
        tally.count(event)
        if (tally.receipts + tally.returns) % 256 == 0:
            publisher.serve_callbacks()
            bar.update(tally, time.monotonic() - began)
            await asyncio.sleep(0)  # let other tasks run even at full speed

    try:
        while options.receipts is None or tally.receipts < options.receipts:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if options.rate > 0:
                due = began + tally.receipts / options.rate
                if due > now:
                    publisher.serve_callbacks()
                    bar.update(tally, now - began)
                    await asyncio.sleep(due - now)
                    continue
            for event in model.next_receipt():
                await publish(event)
        for event in model.drain():
            await publish(event)
        await publisher.flush(timeout=120.0)
    finally:
        bar.update(tally, time.monotonic() - began, force=True)
        bar.finish()
    return tally, time.monotonic() - began


async def _hold_before_sale(
    document: dict[str, Any],
    checkout: Checkout,
    chooser: Random,
    options: SimulationOptions,
    tally: _Tally,
) -> None:
    """Reserve a member sale's coupon uses before it is published, and name them in it."""
    customer_id = document.get("customer_id")
    coupons = document["coupons"]
    if customer_id is None or not coupons or chooser.random() >= options.reserve_share:
        return
    tx = document["transaction_no"]
    for coupon in coupons:
        held = await checkout.hold(
            customer_id,
            coupon["coupon_id"],
            int(coupon["uses"]),
            ttl_seconds=900,
            idempotency_key=f"{tx}:{coupon['coupon_id']}",
        )
        if held is None:
            tally.refused_reservations += 1
        else:
            coupon["reservation_id"] = held
            tally.reservations += 1
    if chooser.random() < options.lapse_share:
        # A second till started a checkout for the customer and abandoned it.
        lapsing = await checkout.hold(
            customer_id, coupons[0]["coupon_id"], 1, ttl_seconds=5, idempotency_key=f"{tx}:lapse"
        )
        tally.lapsing_reservations += lapsing is not None


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share between 0 and 1")
    return value


def _coupon_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


_SHARES = (
    ("anonymous_share", "of sales, without a customer"),
    ("return_share", "of sales, returned later"),
    ("repeat_return_share", "of returns, sent again (the desk must see already_returned)"),
    ("early_return_share", "of returns, sent before their sale"),
    ("partial_return_share", "of returned sales, returned one or two lines at a time"),
)
"""The mix's options: a field of ``SimulationOptions`` each, and what it is a share of."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``punchcard simulate``; defaults are those of ``SimulationOptions``."""
    defaults = SimulationOptions()
    size = parser.add_argument_group("how much and how fast")
    size.add_argument(
        "--receipts",
        type=int,
        default=None,
        help=f"receipts to publish (default {defaults.receipts}, or unlimited with --duration)",
    )
    size.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    size.add_argument(
        "--rate",
        type=float,
        default=100.0,
        help="receipts per second; 0 for as fast as possible (default 100)",
    )
    fleet = parser.add_argument_group("the fleet")
    fleet.add_argument("--stores", type=int, default=defaults.stores)
    fleet.add_argument("--terminals-per-store", type=int, default=defaults.terminals_per_store)
    fleet.add_argument(
        "--customers",
        type=int,
        default=defaults.customers,
        help="distinct member customers (ids like C000123)",
    )
    fleet.add_argument(
        "--customer-prefix",
        default=defaults.customer_prefix,
        help="customer id prefix, so runs do not share customers (default C)",
    )
    fleet.add_argument(
        "--coupons",
        type=_coupon_list,
        default=defaults.coupons,
        help="comma-separated coupon ids receipts use "
        f"(default {','.join(defaults.coupons)}; '' for none)",
    )
    fleet.add_argument(
        "--run-tag", default=None, help="part of every transaction_no (default: random per run)"
    )
    mix = parser.add_argument_group("the mix (shares between 0 and 1)")
    for share, meaning in _SHARES:
        mix.add_argument(
            f"--{share.replace('_', '-')}",
            type=_share,
            default=getattr(defaults, share),
            help=meaning,
        )
    expiry = parser.add_argument_group("points that expire")
    expiry.add_argument(
        "--points-lifetime",
        default=None,
        help="the lifetime the services run with: never or an ISO 8601 duration such as P1D "
        "(default PUNCHCARD_POINTS_LIFETIME); members spend only points that still exist",
    )
    expiry.add_argument(
        "--limited-time-share",
        type=_share,
        default=defaults.limited_time_share,
        help="of member sales, earning limited-time points (points_expire_at)",
    )
    expiry.add_argument(
        "--limited-time",
        default=defaults.limited_time,
        help=f"how long limited-time points last, ISO 8601 (default {defaults.limited_time})",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the generator, for a reproducible stream"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")


def options_from_args(args: argparse.Namespace) -> SimulationOptions:
    """``SimulationOptions`` from parsed arguments; ValueError names what is wrong."""
    receipts = args.receipts
    if receipts is None and args.duration is None:
        receipts = SimulationOptions().receipts
    return SimulationOptions(
        receipts=receipts,
        duration=args.duration,
        rate=args.rate,
        stores=args.stores,
        terminals_per_store=args.terminals_per_store,
        customers=args.customers,
        coupons=tuple(args.coupons),
        anonymous_share=args.anonymous_share,
        return_share=args.return_share,
        repeat_return_share=args.repeat_return_share,
        early_return_share=args.early_return_share,
        partial_return_share=args.partial_return_share,
        seed=args.seed,
        customer_prefix=args.customer_prefix,
        run_tag=args.run_tag,
        points_lifetime=args.points_lifetime,
        limited_time_share=args.limited_time_share,
        limited_time=args.limited_time,
    )


async def run_simulation(settings: Settings, args: argparse.Namespace) -> int:
    """``punchcard simulate``: publish, then print the summary on stdout."""
    try:
        options = options_from_args(args)
    except ValueError as exc:
        raise ConfigurationError(f"simulate: {exc}") from exc
    summary = await simulate(settings, options, progress=None if args.no_progress else sys.stderr)
    print(summary.render())
    return 0
