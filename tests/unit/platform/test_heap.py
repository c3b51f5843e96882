"""Freezing start-up's objects keeps them out of later collections, and only them."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from punchcard_platform.heap import freeze_startup_objects


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def unfrozen_after() -> Iterator[None]:
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen_after")
def test_objects_alive_at_start_up_are_frozen_and_later_cycles_still_collected() -> None:
    """What lives at the call leaves the collector's view; a cycle made afterwards is freed."""
    survivor = _Node()
    freeze_startup_objects()
    assert gc.get_freeze_count() > 0
    # get_objects() lists what the collector scans; frozen objects are not among them.
    assert all(o is not survivor for o in gc.get_objects())

    later, partner = _Node(), _Node()
    later.other, partner.other = partner, later
    watch = weakref.ref(later)
    del later, partner
    gc.collect()
    assert watch() is None
