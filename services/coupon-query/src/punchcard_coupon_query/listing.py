"""A customer's coupon list as JSON, from answers remembered per coupon version.

A list runs the eligibility rule (``eligibility.evaluate``) for each candidate coupon
and writes each listed one as JSON. Done afresh for every request, that took 51 µs of
CPU for a 44-coupon list (as much as the rest of the request). Yet what one coupon
version shows a customer depends on few values: which side of the validity window the
moment falls, the customer's uses, whether the coupon was issued to them, whether the
asked-for store is allowed, and whether ineligible coupons are listed. So its JSON
entry (or "not listed") is kept per coupon version under exactly those values, made
the first time by ``evaluate`` and the model's encoding (``models.eligibility_json``)
themselves. A request then costs two comparisons and a dict lookup per coupon, 15 µs
for the same list.

The customer's active reservations are part of the key, and so is the coupon's total of
uses taken across all customers, but only for a coupon with a campaign-wide limit: a
total that moves with every sale multiplies only those coupons' entries (bounded by
``_Memo.MAX_ENTRIES`` like the rest), and never touches the terms, which are cached per
coupon row version (``queries._TermsCache``) and do not change when a total does.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from punchcard_coupon_query.eligibility import CouponTerms, evaluate, is_listed
from punchcard_coupon_query.models import customer_coupons_json, eligibility_json

__all__ = ["coupon_list_json"]


# Where a moment falls against a coupon's validity window, as ``evaluate`` checks it.
_WITHIN, _BEFORE, _AFTER = 0, 1, 2

_Key = tuple[int, int, bool, bool | None, bool, int, int]
"""Window, uses made, issued to the customer, store allowed (None: no store asked or no
store list), ineligible coupons listed, uses reserved, total taken (0 for a coupon
without a campaign-wide limit, so that its entries do not multiply with every sale)."""

_NOT_YET = b""  # never an entry: every entry is a JSON object


class _Version:
    """One coupon row version's terms and the entries it has given so far."""

    __slots__ = ("entries", "store_ids", "terms", "valid_from", "valid_until")

    def __init__(self, terms: CouponTerms) -> None:
        self.terms = terms
        self.valid_from = terms.valid_from
        self.valid_until = terms.valid_until
        self.store_ids = terms.store_ids
        self.entries: dict[_Key, bytes | None] = {}

    def entry(
        self, key: _Key, *, uses_made: int, issued: bool, store_id: str | None, at: datetime
    ) -> bytes | None:
        """The entry for ``key``, decided by the rule itself with this request's values."""
        decision = evaluate(
            self.terms,
            uses_made=uses_made,
            issued_to_customer=issued,
            store_id=store_id,
            at=at,
            uses_reserved=key[5],
            total_taken=key[6],
        )
        entry = (
            eligibility_json(decision) if is_listed(decision, include_ineligible=key[4]) else None
        )
        self.entries[key] = entry
        _memo.count_entry()
        return entry


class _Memo:
    """Every version's entries, keyed by id() of its terms.

    ``queries`` hands out one ``CouponTerms`` per row version; each ``_Version`` holds its
    terms, so an id cannot be reused while it is here. Versions that went out of use
    (replaced coupons, the terms cache starting over) stay until the memo holds
    ``MAX_ENTRIES`` entries in all (a few MB); then it starts over.
    """

    MAX_ENTRIES = 20_000

    def __init__(self) -> None:
        self.versions: dict[int, _Version] = {}
        self.held = 0

    def add(self, terms: CouponTerms) -> _Version:
        """A new version's place in the memo."""
        version = self.versions[id(terms)] = _Version(terms)
        return version

    def count_entry(self) -> None:
        """One more entry held; past ``MAX_ENTRIES``, start over."""
        self.held += 1
        if self.held > self.MAX_ENTRIES:
            self.versions.clear()
            self.held = 0


_memo = _Memo()


def coupon_list_json(
    customer_id: str,
    at: datetime,
    candidates: Iterable[tuple[CouponTerms, int, bool, int, int]],
    *,
    store_id: str | None,
    include_ineligible: bool,
) -> bytes:
    """The ``CustomerCoupons`` body for ``(terms, uses_made, issued, uses_reserved,
    total_taken)`` candidates, in order.

    Byte for byte what evaluating each with ``evaluate``, keeping those ``is_listed``
    keeps and encoding the ``CustomerCoupons`` model would give (a unit test holds it
    to that).
    """
    entries: list[bytes] = []
    versions = _memo.versions
    for terms, uses_made, issued, reserved, total_taken in candidates:
        version = versions.get(id(terms))
        if version is None or version.terms is not terms:
            version = _memo.add(terms)
        if version.valid_from is not None and at < version.valid_from:
            window = _BEFORE
        elif version.valid_until is not None and at >= version.valid_until:
            window = _AFTER
        else:
            window = _WITHIN
        stores = version.store_ids
        allowed = None if store_id is None or stores is None else store_id in stores
        taken = 0 if version.terms.total_uses_permitted is None else total_taken
        key = (window, uses_made, issued, allowed, include_ineligible, reserved, taken)
        entry = version.entries.get(key, _NOT_YET)
        if entry is _NOT_YET:
            entry = version.entry(key, uses_made=uses_made, issued=issued, store_id=store_id, at=at)
        if entry is not None:
            entries.append(entry)
    return customer_coupons_json(customer_id, at, entries)
