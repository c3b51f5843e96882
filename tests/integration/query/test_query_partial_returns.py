"""What the HTTP API shows of partial returns and of the ledger, decided by the real services."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from punchcard_platform.db import Database
from punchcard_platform.settings import Settings
from punchcard_returns.handler import ReturnHandler

from tests.documents import receipt_document, return_document, sale_lines
from tests.helpers import unique_id
from tests.integration.query.support import Served, client
from tests.integration.returns.support import send_returns, store_sales


async def test_a_receipt_shows_every_outcome_and_what_remains_of_each_line(
    served: Served, db: Database, settings: Settings
) -> None:
    """returns oldest first, return the latest, lines_remaining exact, returned only at the end."""
    customer = unique_id("C")
    sale = receipt_document(
        customer,
        lines=sale_lines(("2.5", "250"), (1, "1000")),
        total="1250",
        points_earned=12,
    )
    tx = sale["transaction_no"]
    await store_sales(db, settings, sale)
    handler = ReturnHandler(settings, db)
    half = return_document(tx, lines=[(1, "1.5")])
    too_much = return_document(tx, lines=[(1, 2)])
    await send_returns(handler, settings, half, too_much)

    async with client(served, served.read_key) as http:
        receipt = json.loads((await http.get(f"/v1/receipts/{tx}")).text)
        listed = (await http.get(f"/v1/customers/{customer}/receipts")).json()["receipts"]
        latest = (await http.get(f"/v1/returns/{tx}")).json()
        await send_returns(handler, settings, return_document(tx))
        done = json.loads((await http.get(f"/v1/receipts/{tx}")).text)
        done_listed = (await http.get(f"/v1/customers/{customer}/receipts")).json()["receipts"]

    assert [(r["return_event_id"], r["status"]) for r in receipt["returns"]] == [
        (half["event_id"], "accepted"),
        (too_much["event_id"], "rejected"),
    ]
    assert receipt["return"] == receipt["returns"][-1] == latest
    assert latest["reason"] == "exceeds_remaining"
    assert receipt["lines_remaining"] == [
        {"line_no": 1, "quantity": "1.0"},
        {"line_no": 2, "quantity": "1"},
    ]
    assert receipt["returned"] is False
    assert listed[0]["returned_amount"] == "150"
    assert done["returned"] is True
    assert done["lines_remaining"] == []
    assert len(done["returns"]) == 3
    assert done["return"]["fully_returned"] is True
    assert done_listed[0]["returned_amount"] == "1250"
    assert done_listed[0]["returned"] is True


async def test_the_ledger_reads_newest_first_by_when_the_customer_shopped(
    served: Served, db: Database, settings: Settings
) -> None:
    """Sales booked in any order, several per batch, page back in sale-time order exactly."""
    customer = unique_id("C")
    start = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    sales = [
        receipt_document(
            customer,
            points_earned=i + 1,
            occurred_at=(start + timedelta(minutes=i)).isoformat(),
        )
        for i in range(12)
    ]
    booked_order = [sales[i] for i in (5, 11, 0, 3, 9, 1, 2, 10, 4, 8, 6, 7)]
    for first in range(0, 12, 4):
        await store_sales(db, settings, *booked_order[first : first + 4])

    seen: list[int] = []
    cursor = None
    async with client(served, served.read_key) as http:
        while True:
            query = "?limit=5" + (f"&cursor={cursor}" if cursor else "")
            page = (await http.get(f"/v1/customers/{customer}/points{query}")).json()
            seen += [entry["points"] for entry in page["ledger"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert seen == list(range(12, 0, -1))
    assert page["balance"] == sum(range(1, 13))
