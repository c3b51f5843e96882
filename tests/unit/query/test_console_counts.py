"""A coupon's uses: waited for briefly, counted once at a time, remembered for a while."""

from __future__ import annotations

import asyncio

from punchcard_coupon_query.console.counts import CouponUseCounts
from punchcard_coupon_query.console.queries import CouponUse


class Counter:
    """A hand-written count: answers when released, and notes how often it was asked."""

    def __init__(self, *, slow: bool = False) -> None:
        self.asked = 0
        self.release = asyncio.Event()
        if not slow:
            self.release.set()

    async def __call__(self, coupon_id: str) -> CouponUse:
        self.asked += 1
        await self.release.wait()
        return CouponUse(uses_made=self.asked * 10, customers=self.asked)


class Clock:
    """Time that moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_quick_count_is_shown_at_once_and_remembered() -> None:
    """Within the wait the page gets the count; within the ttl nobody counts again."""
    count, clock = Counter(), Clock()
    counts = CouponUseCounts(count, ttl=60, wait=1, clock=clock)
    first = await counts.get("TEA")
    clock.now = 59
    again = await counts.get("TEA")
    assert first is not None
    assert again is first
    assert first.use == CouponUse(uses_made=10, customers=1)
    assert count.asked == 1


async def test_a_slow_count_lets_the_page_go_and_is_counted_once_for_everyone() -> None:
    """No page waits for a big campaign's sum; the next view shows it."""
    count = Counter(slow=True)
    counts = CouponUseCounts(count, wait=0.01)
    assert list(await asyncio.gather(counts.get("BIG"), counts.get("BIG"))) == [None, None]
    count.release.set()
    shown = await counts.get("BIG")
    assert shown is not None
    assert shown.use.uses_made == 10
    assert count.asked == 1


async def test_an_old_count_is_shown_while_it_is_counted_again() -> None:
    """Past the ttl the count is made again; meanwhile the last one, with its time, stands."""
    count, clock = Counter(), Clock()
    counts = CouponUseCounts(count, ttl=60, wait=0.5, clock=clock)
    old = await counts.get("TEA")
    count.release.clear()
    clock.now = 61
    assert await counts.get("TEA") is old
    count.release.set()
    new = await counts.get("TEA")  # the count in flight, awaited within the wait
    assert new is not None
    assert new.use.uses_made == 20
