"""What a return changes, decided from plain values: no database, no Kafka.

The store loads the facts (the returns to decide, their stored receipts, the catalog
flags, the current counts) and writes back what ``decide_returns`` says. Keeping the rules
here lets the unit tests state CONTRACT.md section 2 ("ReturnEvent") without any I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import msgspec
from punchcard_contract import event_id_text, json_time
from punchcard_platform.outbox import OutboxMessage
from punchcard_platform.settings import TopicNames

__all__ = [
    "CatalogCoupon",
    "Decision",
    "LedgerEntry",
    "PendingReturn",
    "ReturnPlan",
    "StoredReceipt",
    "UsesGivenBack",
    "claims",
    "coupons_to_count",
    "decide_returns",
]

Status = Literal["accepted", "rejected"]
RejectReason = Literal["already_returned", "unknown_transaction"]


@dataclass(frozen=True, slots=True)
class PendingReturn:
    """A return event stored but not yet decided (it may be waiting for its receipt)."""

    event_id: str
    transaction_no: str
    seq: int
    wait_until: datetime


@dataclass(frozen=True, slots=True)
class StoredReceipt:
    """What a return needs of the stored sale: who, which points, which coupon uses."""

    transaction_no: str
    customer_id: str | None
    points_used: int
    points_earned: int
    coupons: tuple[tuple[str, int], ...] = ()
    """(coupon_id, uses) as the receipt consumer summed them."""


@dataclass(frozen=True, slots=True)
class CatalogCoupon:
    """The catalog facts a return looks at; a coupon missing from the catalog has none."""

    coupon_id: str
    uses_permitted: int | None
    restore_on_return: bool = True


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One points_ledger row: restore is positive, revoke negative."""

    customer_id: str
    transaction_no: str
    kind: Literal["restore", "revoke"]
    points: int


@dataclass(frozen=True, slots=True)
class UsesGivenBack:
    """Coupon uses taken off a customer's count (the real amount, after the floor at zero)."""

    customer_id: str
    coupon_id: str
    uses: int


@dataclass(frozen=True, slots=True)
class Decision:
    """How one return ended.

    ``outcome`` holds the ReturnOutcomeEvent's fields in the contract's order (what
    ``ReturnOutcomeEvent.model_dump`` would give), and ``encoded`` its JSON, encoded once for
    both the outbox and the stored outcome.
    """

    event_id: str
    transaction_no: str
    status: Status
    outcome: dict[str, Any]
    encoded: bytes


@dataclass(slots=True)
class ReturnPlan:
    """Everything one batch of returns changes, for the store to write in one transaction."""

    decisions: list[Decision] = field(default_factory=list)
    ledger: list[LedgerEntry] = field(default_factory=list)
    uses_given_back: list[UsesGivenBack] = field(default_factory=list)
    returned: list[tuple[str, str]] = field(default_factory=list)
    """(transaction_no, return event_id) of the receipts now marked returned."""
    messages: list[OutboxMessage] = field(default_factory=list)
    still_pending: list[PendingReturn] = field(default_factory=list)


def claims(
    pending: Sequence[PendingReturn], receipts: Mapping[str, StoredReceipt]
) -> dict[str, str]:
    """Which return may try to claim each known transaction: its earliest one.

    Only one candidate per transaction goes to the once-only insert, so a batch holding
    several returns of one sale never depends on the order PostgreSQL inserts rows in.
    The insert itself (``transaction_returns`` primary key) still decides who wins.
    """
    chosen: dict[str, PendingReturn] = {}
    for item in pending:
        if item.transaction_no not in receipts:
            continue
        current = chosen.get(item.transaction_no)
        if current is None or item.seq < current.seq:
            chosen[item.transaction_no] = item
    return {transaction_no: item.event_id for transaction_no, item in chosen.items()}


def coupons_to_count(
    receipts: Iterable[StoredReceipt],
) -> set[tuple[str, str]]:
    """The (customer_id, coupon_id) counts a set of returns may change, to load and lock."""
    return {
        (receipt.customer_id, coupon_id)
        for receipt in receipts
        if receipt.customer_id is not None
        for coupon_id, _ in receipt.coupons
    }


def decide_returns(
    pending: Sequence[PendingReturn],
    *,
    receipts: Mapping[str, StoredReceipt],
    claimed: Set[str],
    catalog: Mapping[str, CatalogCoupon],
    uses_made: Mapping[tuple[str, str], int],
    balances: Mapping[str, int],
    now: datetime,
    topics: TopicNames,
) -> ReturnPlan:
    """Decide every return of ``pending`` (CONTRACT.md section 2, rules 2 to 4).

    ``claimed`` holds the event ids that won the once-only insert: those are accepted.
    Another return of a known transaction is ``already_returned``; a return whose receipt
    is unknown waits until ``wait_until`` and is then ``unknown_transaction``.
    ``uses_made`` and ``balances`` are the counts as locked now; returns of one customer in
    the same batch see each other's effects, so every event carries the value after it.
    """
    decider = _Decider(
        catalog=catalog,
        uses_made=dict(uses_made),
        balances=dict(balances),
        now=json_time(now),
        topics=topics,
    )
    for item in sorted(pending, key=lambda p: p.seq):
        receipt = receipts.get(item.transaction_no)
        if receipt is None:
            if item.wait_until <= now:
                decider.reject(item, None, "unknown_transaction")
            else:
                decider.plan.still_pending.append(item)
        elif item.event_id in claimed:
            decider.accept(item, receipt)
        else:
            decider.reject(item, receipt.customer_id, "already_returned")
    return decider.plan


@dataclass(slots=True, kw_only=True)
class _Decider:
    """The running state of one batch: returns of one customer see each other's effects."""

    catalog: Mapping[str, CatalogCoupon]
    uses_made: dict[tuple[str, str], int]
    balances: dict[str, int]
    now: str
    """When the effects commit, as output events write it."""
    topics: TopicNames
    plan: ReturnPlan = field(default_factory=ReturnPlan)

    def reject(self, item: PendingReturn, customer_id: str | None, reason: RejectReason) -> None:
        self._decide(item, self._outcome(item, customer_id, status="rejected", reason=reason))

    def _outcome(
        self,
        item: PendingReturn,
        customer_id: str | None,
        *,
        status: Status,
        reason: RejectReason | None = None,
        points_restored: int = 0,
        points_revoked: int = 0,
        coupons_restored: Sequence[dict[str, Any]] = (),
    ) -> dict[str, Any]:
        return {
            "schema_version": 1,
            "event_id": event_id_text(item.event_id, "outcome"),
            "occurred_at": self.now,
            "transaction_no": item.transaction_no,
            "return_event_id": item.event_id,
            "customer_id": customer_id,
            "status": status,
            "reason": reason,
            "points_restored": points_restored,
            "points_revoked": points_revoked,
            "coupons_restored": list(coupons_restored),
        }

    def accept(self, item: PendingReturn, receipt: StoredReceipt) -> None:
        customer_id = receipt.customer_id
        restored: list[dict[str, Any]] = []
        points_restored = points_revoked = 0
        if customer_id is not None:
            # An anonymous sale counted toward nobody and booked no points: nothing to give back.
            points_restored, points_revoked = receipt.points_used, receipt.points_earned
            if points_restored:
                self._book_points(customer_id, receipt.transaction_no, "restore", points_restored)
            if points_revoked:
                self._book_points(customer_id, receipt.transaction_no, "revoke", -points_revoked)
            for coupon_id, uses in receipt.coupons:
                given = self._give_back_uses(customer_id, receipt.transaction_no, coupon_id, uses)
                if given:
                    restored.append({"coupon_id": coupon_id, "uses": given})
        self.plan.returned.append((receipt.transaction_no, item.event_id))
        outcome = self._outcome(
            item,
            customer_id,
            status="accepted",
            points_restored=points_restored,
            points_revoked=points_revoked,
            coupons_restored=restored,
        )
        self._decide(item, outcome)

    def _book_points(
        self,
        customer_id: str,
        transaction_no: str,
        kind: Literal["restore", "revoke"],
        delta: int,
    ) -> None:
        # Never clamped: points already spent elsewhere leave the balance negative (CONTRACT 2.4).
        balance = self.balances.get(customer_id, 0) + delta
        self.balances[customer_id] = balance
        self.plan.ledger.append(LedgerEntry(customer_id, transaction_no, kind, delta))
        event = {
            "schema_version": 1,
            "event_id": event_id_text(transaction_no, "points", kind),
            "occurred_at": self.now,
            "customer_id": customer_id,
            "transaction_no": transaction_no,
            "kind": kind,
            "points": delta,
            "balance": balance,
        }
        self.plan.messages.append(_message(self.topics.points, customer_id, event))

    def _give_back_uses(
        self, customer_id: str, transaction_no: str, coupon_id: str, uses: int
    ) -> int:
        coupon = self.catalog.get(coupon_id)
        if coupon is not None and not coupon.restore_on_return:
            return 0
        before = self.uses_made.get((customer_id, coupon_id), 0)
        after = max(before - uses, 0)
        given = before - after
        if not given:
            # The count is already at zero (e.g. reset by an operator): nothing changed, no event.
            return 0
        self.uses_made[(customer_id, coupon_id)] = after
        self.plan.uses_given_back.append(UsesGivenBack(customer_id, coupon_id, given))
        permitted = coupon.uses_permitted if coupon is not None else None
        event = {
            "schema_version": 1,
            "event_id": event_id_text(transaction_no, "coupon", coupon_id, "return"),
            "occurred_at": self.now,
            "customer_id": customer_id,
            "coupon_id": coupon_id,
            "transaction_no": transaction_no,
            "source": "return",
            "delta": -given,
            "uses_made": after,
            "uses_permitted": permitted,
            "over_limit": permitted is not None and after > permitted,
        }
        self.plan.messages.append(_message(self.topics.coupon_usage, customer_id, event))
        return given

    def _decide(self, item: PendingReturn, outcome: dict[str, Any]) -> None:
        message = _message(self.topics.return_outcomes, item.transaction_no, outcome)
        self.plan.decisions.append(
            Decision(
                item.event_id, item.transaction_no, outcome["status"], outcome, message.payload
            )
        )
        self.plan.messages.append(message)


_ENCODER = msgspec.json.Encoder()


def _message(topic: str, key: str, event: dict[str, Any]) -> OutboxMessage:
    """An output event as the outbox takes it: its fields encoded once, in their order."""
    return OutboxMessage(topic, key, event["event_id"], _ENCODER.encode(event))
