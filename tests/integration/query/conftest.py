"""Fixtures of the coupon-query integration tests: the app served on a real port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from punchcard_devstack import Endpoints
from punchcard_platform.db import Database

from tests.integration.query.support import Served, serve_in_loop


@pytest.fixture
async def served(stack: Endpoints, db: Database) -> AsyncIterator[Served]:
    """coupon-query listening on 127.0.0.1 over the session's database, with fresh keys."""
    async with serve_in_loop(stack.database_url, db) as running:
        yield running
