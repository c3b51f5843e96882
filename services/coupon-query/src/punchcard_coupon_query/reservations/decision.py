"""Whether uses of a coupon may be held for a customer, decided on plain values.

The eligibility rule (``eligibility.evaluate``) already counts every active reservation:
a coupon whose remaining uses are all held is ``reserved`` (this customer's holds) or
``sold_out`` (everyone's). A reservation is refused with that reason; an eligible coupon
with fewer uses left than asked for is refused as ``exceeds_remaining``.

``decide`` takes the reservations asked for together (a batch, see ``batcher``) in
order, each counting the holds made before it in the batch as if they were committed:
the answers are those the asks would get one after another, each in its own
transaction (the property tests hold it to that).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import orjson

from punchcard_coupon_query.eligibility import CouponCandidate, Eligibility, evaluate_candidate
from punchcard_coupon_query.models import Reservation

__all__ = [
    "EXCEEDS_REMAINING",
    "IDEMPOTENCY_CONFLICT",
    "Ask",
    "Hold",
    "Made",
    "NotInCatalog",
    "Outcome",
    "Refused",
    "Replayed",
    "Seen",
    "decide",
    "refusal",
    "request_fingerprint",
]

EXCEEDS_REMAINING: Final = "exceeds_remaining"
IDEMPOTENCY_CONFLICT: Final = "idempotency_conflict"


@dataclass(frozen=True, slots=True)
class Ask:
    """A reservation asked for: who asked (the API key's id), for whom, what and where."""

    key_id: str
    customer_id: str
    coupon_id: str
    uses: int = 1
    ttl_seconds: int = 900
    store_id: str | None = None
    terminal_id: str | None = None
    idempotency_key: str | None = None

    @property
    def fingerprint(self) -> bytes:
        """What an ``Idempotency-Key`` is held to (``request_fingerprint``)."""
        body = {
            "uses": self.uses,
            "ttl_seconds": self.ttl_seconds,
            "store_id": self.store_id,
            "terminal_id": self.terminal_id,
        }
        return request_fingerprint(self.customer_id, self.coupon_id, body)

    @property
    def key(self) -> tuple[str, str] | None:
        """The ``Idempotency-Key`` with the API key it is kept for, or None."""
        return None if self.idempotency_key is None else (self.key_id, self.idempotency_key)


@dataclass(frozen=True, slots=True)
class Seen:
    """What the database held for one ask when its batch was decided.

    ``candidate`` is the coupon as the customer sees it (None: not in the catalog);
    ``first`` the fingerprint and 201 answer of an earlier request with the same
    ``Idempotency-Key`` (within its 24 hours), if any.
    """

    candidate: CouponCandidate | None
    first: tuple[bytes, str] | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    """A reservation to write, with the key's claim if it came with one."""

    reservation_id: str
    ask: Ask
    expires_at: datetime
    answer: str
    """The 201 answer's JSON, kept with the key for its retries."""


@dataclass(frozen=True, slots=True)
class Made:
    """201: the uses are held (once ``hold`` is written)."""

    hold: Hold

    @property
    def answer(self) -> str:
        """The 201 answer's JSON."""
        return self.hold.answer


@dataclass(frozen=True, slots=True)
class Replayed:
    """201 again: the answer the first request with this ``Idempotency-Key`` got."""

    answer: str


@dataclass(frozen=True, slots=True)
class Refused:
    """409 with ``reason``."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class NotInCatalog:
    """404: no such coupon."""

    detail: str


Outcome = Made | Replayed | Refused | NotInCatalog


def refusal(eligibility: Eligibility, uses: int) -> str | None:
    """The 409 ``reason`` for holding ``uses`` more, or None when they may be held."""
    if eligibility.reason is not None:
        return eligibility.reason.value
    left = [
        n for n in (eligibility.uses_remaining, eligibility.total_uses_remaining) if n is not None
    ]
    if left and uses > min(left):
        return EXCEEDS_REMAINING
    return None


def request_fingerprint(customer_id: str, coupon_id: str, body: Mapping[str, object]) -> bytes:
    """What an ``Idempotency-Key`` is held to: the customer, the coupon and the body,
    defaults applied, so that a retry spelling a default out is the same request."""
    canonical = orjson.dumps(
        {"customer_id": customer_id, "coupon_id": coupon_id, "body": body},
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(canonical).digest()


def decide(
    asks: Sequence[Ask], seen: Sequence[Seen], *, now: datetime, new_ids: Iterator[str]
) -> list[Outcome]:
    """Each ask's outcome, in order, each counting the holds of the ones before it.

    ``seen[i]`` is what the database held for ``asks[i]`` (read under the batch's locks);
    ``now`` the database's clock then; ``new_ids`` gives each reservation made its id.
    A refused ask leaves its ``Idempotency-Key`` free, as a refused call rolls back; an
    ask repeating the key of one made earlier in the batch gets its answer (same request)
    or ``idempotency_conflict`` (another one).
    """
    held_by_customer: dict[tuple[str, str], int] = {}  # (customer, coupon): uses held here
    held_by_coupon: dict[str, int] = {}
    made_for_key: dict[tuple[str, str], Made] = {}
    outcomes: list[Outcome] = []
    for ask, found in zip(asks, seen, strict=True):
        key = ask.key
        earlier = None if key is None else made_for_key.get(key)
        first = found.first if earlier is None else (earlier.hold.ask.fingerprint, earlier.answer)
        if first is not None:
            outcomes.append(_again(ask, first))
            continue
        if found.candidate is None:
            outcomes.append(NotInCatalog(f"coupon {ask.coupon_id!r} is not in the catalog"))
            continue
        pair = (ask.customer_id, ask.coupon_id)
        decision = evaluate_candidate(
            found.candidate,
            store_id=ask.store_id,
            at=now,
            also_reserved=held_by_customer.get(pair, 0),
            also_taken=held_by_coupon.get(ask.coupon_id, 0),
        )
        reason = refusal(decision, ask.uses)
        if reason is not None:
            detail = f"coupon {ask.coupon_id!r} cannot be reserved: {reason}"
            outcomes.append(Refused(reason, detail))
            continue
        made = Made(_hold(ask, decision, next(new_ids), now))
        held_by_customer[pair] = held_by_customer.get(pair, 0) + ask.uses
        held_by_coupon[ask.coupon_id] = held_by_coupon.get(ask.coupon_id, 0) + ask.uses
        if key is not None:
            made_for_key[key] = made
        outcomes.append(made)
    return outcomes


def _again(ask: Ask, first: tuple[bytes, str]) -> Outcome:
    """A request with an ``Idempotency-Key`` already used: the same answer, or 409."""
    fingerprint, answer = first
    if fingerprint != ask.fingerprint:
        return Refused(IDEMPOTENCY_CONFLICT, "this Idempotency-Key was used with another request")
    return Replayed(answer)


def _less(remaining: int | None, uses: int) -> int | None:
    return None if remaining is None else max(remaining - uses, 0)


def _hold(ask: Ask, decision: Eligibility, reservation_id: str, now: datetime) -> Hold:
    expires_at = now + timedelta(seconds=ask.ttl_seconds)
    answer = Reservation(
        reservation_id=reservation_id,
        customer_id=ask.customer_id,
        coupon_id=ask.coupon_id,
        uses=ask.uses,
        expires_at=expires_at,
        uses_remaining=_less(decision.uses_remaining, ask.uses),
        total_uses_remaining=_less(decision.total_uses_remaining, ask.uses),
    ).model_dump_json()
    return Hold(reservation_id, ask, expires_at, answer)
