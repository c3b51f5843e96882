"""Reservations decided together (``decision.decide``): as if one after another."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from punchcard_coupon_query.eligibility import CouponTerms
from punchcard_coupon_query.reservations.decision import (
    EXCEEDS_REMAINING,
    IDEMPOTENCY_CONFLICT,
    Ask,
    Made,
    NotInCatalog,
    Outcome,
    Refused,
    Replayed,
    Seen,
    decide,
)

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _coupon(coupon_id: str, uses_permitted: int | None, total: int | None) -> CouponTerms:
    return CouponTerms(
        coupon_id=coupon_id,
        name=coupon_id,
        description="",
        uses_permitted=uses_permitted,
        valid_from=NOW - timedelta(days=1),
        valid_until=None,
        active=True,
        targeted=False,
        store_ids=None,
        total_uses_permitted=total,
    )


@dataclass
class _Database:
    """What the database holds, as ``store.read`` would report it to a batch."""

    coupons: dict[str, CouponTerms]
    made: dict[tuple[str, str], int] = field(default_factory=dict)
    held: dict[tuple[str, str], int] = field(default_factory=dict)
    keys: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)

    def seen(self, ask: Ask) -> Seen:
        first = None if ask.key is None else self.keys.get(ask.key)
        terms = self.coupons.get(ask.coupon_id)
        if terms is None:
            return Seen(None, first)
        pair = (ask.customer_id, ask.coupon_id)
        taken = 0
        if terms.total_uses_permitted is not None:
            taken = sum(
                n for (_, c), n in [*self.made.items(), *self.held.items()] if c == ask.coupon_id
            )
        return Seen((terms, self.made.get(pair, 0), True, self.held.get(pair, 0), taken), first)

    def commit(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            if isinstance(outcome, Made):
                ask = outcome.hold.ask
                pair = (ask.customer_id, ask.coupon_id)
                self.held[pair] = self.held.get(pair, 0) + ask.uses
                if ask.key is not None:
                    self.keys[ask.key] = (ask.fingerprint, outcome.answer)


def _ids() -> Iterator[str]:
    return (f"R{n}" for n in itertools.count())


_asks = st.lists(
    st.builds(
        Ask,
        key_id=st.sampled_from(["k1", "k2"]),
        customer_id=st.sampled_from(["C1", "C2", "C3"]),
        coupon_id=st.sampled_from(["CAPPED", "PER-CUSTOMER", "GONE"]),
        uses=st.integers(1, 3),
        ttl_seconds=st.sampled_from([60, 900]),
        idempotency_key=st.none() | st.sampled_from(["a", "b"]),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(
    asks=_asks,
    permitted=st.none() | st.integers(1, 6),
    total=st.integers(1, 10),
    made=st.dictionaries(
        st.tuples(st.sampled_from(["C1", "C2", "C3"]), st.sampled_from(["CAPPED", "PER-CUSTOMER"])),
        st.integers(0, 3),
    ),
)
def test_a_batch_answers_as_its_asks_one_after_another(
    asks: list[Ask],
    permitted: int | None,
    total: int,
    made: dict[tuple[str, str], int],
) -> None:
    """Every outcome, id and answer of a batch is what each ask gets in its own
    transaction after the ones before it committed; no limit is held past."""
    coupons = {
        "CAPPED": _coupon("CAPPED", permitted, total),
        "PER-CUSTOMER": _coupon("PER-CUSTOMER", permitted, None),
    }
    together = _Database(coupons, dict(made))
    batch = decide(asks, [together.seen(a) for a in asks], now=NOW, new_ids=_ids())

    one_by_one = _Database(coupons, dict(made))
    ids = _ids()
    alone: list[Outcome] = []
    for ask in asks:
        [outcome] = decide([ask], [one_by_one.seen(ask)], now=NOW, new_ids=ids)
        one_by_one.commit([outcome])
        alone.append(outcome)

    assert batch == alone
    together.commit(batch)
    assert together.held == one_by_one.held
    capped_taken = sum(
        n for (_, c), n in [*together.made.items(), *together.held.items()] if c == "CAPPED"
    )
    if any(c == "CAPPED" for (_, c) in together.held):
        assert capped_taken <= total
    for pair, held in together.held.items():
        if permitted is not None:
            assert together.made.get(pair, 0) + held <= permitted


def test_the_last_uses_go_to_the_first_asks_and_the_rest_are_told_why() -> None:
    """Three uses left in total: two asks of 2 uses each get 201 and 409."""
    coupons = {"CAPPED": _coupon("CAPPED", None, 3)}
    asks = [Ask("k", "C1", "CAPPED", uses=2), Ask("k", "C2", "CAPPED", uses=2)]
    database = _Database(coupons)

    first, second = decide(asks, [database.seen(a) for a in asks], now=NOW, new_ids=_ids())

    assert isinstance(first, Made)
    assert orjson.loads(first.answer)["total_uses_remaining"] == 1
    assert second == Refused(
        EXCEEDS_REMAINING, "coupon 'CAPPED' cannot be reserved: exceeds_remaining"
    )


def test_a_key_repeated_in_a_batch_gets_the_first_answer_or_a_conflict() -> None:
    """The same request again answers as the first; another request with its key, 409."""
    coupons = {"PER-CUSTOMER": _coupon("PER-CUSTOMER", 5, None)}
    first = Ask("k", "C1", "PER-CUSTOMER", idempotency_key="a")
    other = Ask("k", "C1", "PER-CUSTOMER", uses=2, idempotency_key="a")
    asks = [first, first, other, Ask("k", "C1", "GONE")]
    database = _Database(coupons)

    made, again, conflict, missing = decide(
        asks, [database.seen(a) for a in asks], now=NOW, new_ids=_ids()
    )

    assert isinstance(made, Made)
    assert again == Replayed(made.answer)
    assert isinstance(conflict, Refused)
    assert conflict.reason == IDEMPOTENCY_CONFLICT
    assert missing == NotInCatalog("coupon 'GONE' is not in the catalog")
    assert made.hold.expires_at == NOW + timedelta(seconds=900)
