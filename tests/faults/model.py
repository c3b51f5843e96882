"""What the system must end up as, computed from the input topics as they were written.

Written from CONTRACT.md alone; it shares no code with the services. The input is the
log itself (read back after the load), not what the load generator meant to send: a send
that timed out during a broker restart may or may not be in the log, and its retry may be
there twice, so the log is the only truth about what was published and in what order.

The rules, from the contract:
- receipts: the first record of a ``transaction_no`` stands; a later one with the same
  content (``event_id`` aside) is a redelivery; with other content it is a
  ``conflicting_duplicate`` dead letter.
- returns: a repeated ``event_id`` is a redelivery; of the distinct return events of a
  transaction, the first in the log is accepted (its sale always arrives here) and every
  later one is rejected ``already_returned``.
- an accepted return gives back the points used (``restore``), takes back the points
  earned (``revoke``) and gives back each coupon use; net, a returned sale counts nothing.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Expected", "InputRecord", "expected_state"]


@dataclass(frozen=True, slots=True)
class InputRecord:
    """One record of an input topic as it sits in the log."""

    partition: int
    offset: int
    value: bytes


PointsKey = tuple[str, str]
"""(transaction_no, kind)"""
UsageKey = tuple[str, str, str]
"""(transaction_no, coupon_id, source)"""


@dataclass(slots=True)
class Expected:
    """The state and the output events one clean pass over the logs gives."""

    receipts: set[str] = field(default_factory=set)
    customer_of: dict[str, str | None] = field(default_factory=dict)
    uses: dict[tuple[str, str], int] = field(default_factory=dict)
    balances: dict[str, int] = field(default_factory=dict)
    ledger: Counter[tuple[str, str, str, int]] = field(default_factory=Counter)
    """(customer_id, transaction_no, kind, signed points) -> 1"""
    returns: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    """return event_id -> (status, reason)"""
    tx_of_return: dict[str, str] = field(default_factory=dict)
    """return event_id -> transaction_no"""
    first_return: dict[str, str] = field(default_factory=dict)
    """transaction_no -> the return event_id that must be the accepted one"""
    points_events: dict[PointsKey, tuple[str, int]] = field(default_factory=dict)
    """(transaction_no, kind) -> (customer_id, signed points)"""
    usage_events: dict[UsageKey, tuple[str, int]] = field(default_factory=dict)
    """(transaction_no, coupon_id, source) -> (customer_id, delta)"""
    outcome_events: dict[str, tuple[str, str | None, int, int]] = field(default_factory=dict)
    """return event_id -> (status, reason, points_restored, points_revoked)"""
    conflicts: set[tuple[int, int]] = field(default_factory=set)
    """(partition, offset) of every receipt record that must be dead-lettered"""
    input_records: int = 0


def _content(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != "event_id"}


def _coupon_uses(document: dict[str, Any]) -> dict[str, int]:
    summed: Counter[str] = Counter()
    for coupon in document.get("coupons") or []:
        summed[coupon["coupon_id"]] += int(coupon.get("uses", 1))
    return dict(summed)


def _in_log_order(records: Iterable[InputRecord]) -> list[InputRecord]:
    return sorted(records, key=lambda r: (r.partition, r.offset))


def expected_state(receipts: Iterable[InputRecord], returns: Iterable[InputRecord]) -> Expected:
    """The expected end state after every record of both logs was applied once."""
    out = Expected()
    sales = _standing_sales(receipts, out)
    return_events = _distinct_returns(returns, out)
    for tx, sale in sales.items():
        _book_sale(out, tx, sale, returned=bool(return_events.get(tx)))
    for tx, ids in return_events.items():
        _decide_returns(out, tx, ids, sales.get(tx))
    out.uses = {k: v for k, v in out.uses.items() if v}
    return out


def _standing_sales(records: Iterable[InputRecord], out: Expected) -> dict[str, dict[str, Any]]:
    """The first receipt of each transaction; later ones with other content are conflicts."""
    sales: dict[str, dict[str, Any]] = {}
    for record in _in_log_order(records):
        out.input_records += 1
        document = json.loads(record.value)
        standing = sales.setdefault(document["transaction_no"], document)
        if standing is not document and _content(standing) != _content(document):
            out.conflicts.add((record.partition, record.offset))
    return sales


def _distinct_returns(records: Iterable[InputRecord], out: Expected) -> dict[str, list[str]]:
    """Each transaction's return event ids, first appearance in the log first."""
    return_events: dict[str, list[str]] = defaultdict(list)
    for record in _in_log_order(records):
        out.input_records += 1
        document = json.loads(record.value)
        ids = return_events[document["transaction_no"]]
        if document["event_id"] not in ids:
            ids.append(document["event_id"])
    return return_events


def _book_sale(out: Expected, tx: str, sale: dict[str, Any], *, returned: bool) -> None:
    customer = sale.get("customer_id")
    out.receipts.add(tx)
    out.customer_of[tx] = customer
    if customer is None:
        # Anonymous: stored, counted toward nobody, no points.
        return
    used, earned = int(sale.get("points_used", 0)), int(sale.get("points_earned", 0))
    for coupon, count in _coupon_uses(sale).items():
        out.usage_events[(tx, coupon, "receipt")] = (customer, count)
        if returned:
            out.usage_events[(tx, coupon, "return")] = (customer, -count)
        else:
            out.uses[(customer, coupon)] = out.uses.get((customer, coupon), 0) + count
    booked = [("burn", -used), ("earn", earned)]
    if returned:
        booked += [("restore", used), ("revoke", -earned)]
    for kind, points in booked:
        if points:
            out.ledger[(customer, tx, kind, points)] += 1
            out.points_events[(tx, kind)] = (customer, points)
    out.balances.setdefault(customer, 0)
    if not returned:
        out.balances[customer] += earned - used


def _decide_returns(out: Expected, tx: str, ids: list[str], sale: dict[str, Any] | None) -> None:
    if sale is None:
        raise AssertionError(f"the workload returned {tx} but never sold it")
    out.first_return[tx] = ids[0]
    out.tx_of_return.update(dict.fromkeys(ids, tx))
    customer = sale.get("customer_id")
    restored = int(sale.get("points_used", 0)) if customer else 0
    revoked = int(sale.get("points_earned", 0)) if customer else 0
    out.returns[ids[0]] = ("accepted", None)
    out.outcome_events[ids[0]] = ("accepted", None, restored, revoked)
    for later in ids[1:]:
        out.returns[later] = ("rejected", "already_returned")
        out.outcome_events[later] = ("rejected", "already_returned", 0, 0)
