"""``make run`` shows a customer's expiring points in one line."""

from __future__ import annotations

from punchcard.demo import _expiring


def test_a_customer_without_expiring_points_reads_nothing() -> None:
    """An empty ``expiring`` list is said in a word."""
    assert _expiring([]) == "nothing"


def test_expiring_points_read_soonest_first_and_the_rest_are_counted() -> None:
    """The first few moments with their points, then how many more there are."""
    expiring = [{"expires_at": f"2026-12-04T0{n}:00:00Z", "points": 10 * (n + 1)} for n in range(6)]
    assert _expiring(expiring, shown=2) == (
        "10 at 2026-12-04T00:00:00Z, 20 at 2026-12-04T01:00:00Z and 4 moments more"
    )
