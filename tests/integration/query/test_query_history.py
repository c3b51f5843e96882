"""Points, receipts and returns read over real HTTP, pages included."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from punchcard_platform.db import Database
from punchcard_platform.settings import Settings

from tests.documents import receipt_document
from tests.helpers import unique_id
from tests.integration.query.support import (
    Served,
    client,
    insert_ledger,
    insert_receipt,
    insert_return,
    mark_returned,
    outcome,
)
from tests.integration.returns.support import store_sales

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
BASE = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)


async def all_pages(http: httpx.AsyncClient, path: str, key: str, limit: int) -> list[Any]:
    """Follow next_cursor to the end, collecting the list under ``key``."""
    items: list[Any] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        page = (await http.get(path, params=params)).json()
        items.extend(page[key])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def test_a_customer_never_seen_has_zero_points_and_no_history(served: Served) -> None:
    """Balance 0, empty ledger, empty receipts: not a 404."""
    customer = unique_id("C")
    async with client(served, served.read_key) as http:
        points = await http.get(f"/v1/customers/{customer}/points")
        receipts = await http.get(f"/v1/customers/{customer}/receipts")
    assert points.json() == {
        "customer_id": customer,
        "balance": 0,
        "expiring": [],
        "ledger": [],
        "next_cursor": None,
    }
    assert receipts.json() == {"customer_id": customer, "receipts": [], "next_cursor": None}


async def test_the_points_ledger_pages_newest_first(served: Served, db: Database) -> None:
    """Balance from points_balances; ledger by id descending across pages, no repeats."""
    customer = unique_id("C")
    entries = [
        (unique_id("TX"), kind, points, BASE + timedelta(minutes=i))
        for i, (kind, points) in enumerate(
            [("earn", 19), ("burn", -100), ("earn", 5), ("restore", 100), ("revoke", -19)] * 3
        )
    ]
    await insert_ledger(db, customer_id=customer, entries=entries)
    async with client(served, served.read_key) as http:
        first = (await http.get(f"/v1/customers/{customer}/points", params={"limit": 4})).json()
        ledger = await all_pages(http, f"/v1/customers/{customer}/points", "ledger", 4)
    assert first["balance"] == sum(points for _, _, points, _ in entries)
    assert len(first["ledger"]) == 4
    assert first["next_cursor"] is not None
    assert [(e["transaction_no"], e["kind"], e["points"]) for e in ledger] == [
        (tx, kind, points) for tx, kind, points, _ in reversed(entries)
    ]
    assert ledger[0]["occurred_at"] == entries[-1][3].isoformat().replace("+00:00", "Z")


async def test_receipts_page_newest_first_with_exact_totals(served: Served, db: Database) -> None:
    """Newest first by (occurred_at, transaction_no); total is the exact decimal string."""
    customer = unique_id("C")
    totals = ["1980", "0.0000001", "123456789012345678901234567890.12", "19.80"]
    txs = []
    for i, total in enumerate(totals):
        tx = unique_id("TX")
        txs.append(tx)
        await insert_receipt(
            db,
            transaction_no=tx,
            customer_id=customer,
            occurred_at=BASE + timedelta(hours=i),
            total=total,
        )
    returned_tx = txs[1]
    event_id = await insert_return(
        db,
        transaction_no=returned_tx,
        status="accepted",
        decided_at=BASE,
        result=outcome(returned_tx, "r", status="accepted"),
    )
    await mark_returned(db, transaction_no=returned_tx, return_event_id=event_id)
    async with client(served, served.read_key) as http:
        receipts = await all_pages(http, f"/v1/customers/{customer}/receipts", "receipts", 3)
    assert [r["transaction_no"] for r in receipts] == list(reversed(txs))
    assert [r["total"] for r in receipts] == list(reversed(totals))
    assert [r["returned"] for r in receipts] == [False, False, True, False]
    assert receipts[-1] == {
        "transaction_no": txs[0],
        "store_id": "S0042",
        "occurred_at": "2026-11-22T01:00:00Z",
        "total": "1980",
        "currency": "JPY",
        "returned": False,
        "returned_amount": "0",
    }


async def test_receipt_pages_stay_stable_while_receipts_keep_arriving(
    served: Served, db: Database
) -> None:
    """New receipts landing between pages: every earlier one once, no duplicates, order kept."""
    customer = unique_id("C")
    existing: list[str] = []
    for i in range(40):
        tx = f"{customer}-E{i:03d}"
        existing.append(tx)
        # Several receipts share a timestamp, so transaction_no must break ties.
        await insert_receipt(
            db,
            transaction_no=tx,
            customer_id=customer,
            occurred_at=BASE + timedelta(minutes=i // 3),
        )

    arrived: list[str] = []

    async def arrive(tx: str, occurred_at: datetime) -> None:
        arrived.append(tx)
        await insert_receipt(db, transaction_no=tx, customer_id=customer, occurred_at=occurred_at)

    seen: list[dict[str, Any]] = []
    async with client(served, served.read_key) as http:
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 4}
            if cursor:
                params["cursor"] = cursor
            page = (await http.get(f"/v1/customers/{customer}/receipts", params=params)).json()
            seen.extend(page["receipts"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
            # Between two pages: a newer receipt, an older one, and two tied with the last
            # one shown, sorting before ("N") and after ("A") it.
            last = datetime.fromisoformat(page["receipts"][-1]["occurred_at"])
            n = len(arrived)
            await asyncio.gather(
                arrive(f"{customer}-N{n:04d}", BASE + timedelta(days=1)),
                arrive(f"{customer}-O{n:04d}", BASE - timedelta(minutes=30)),
                arrive(f"{customer}-N{n + 1:04d}", last),
                arrive(f"{customer}-A{n:04d}", last),
            )

    assert len(arrived) >= 40
    numbers = [r["transaction_no"] for r in seen]
    assert len(numbers) == len(set(numbers)), "a receipt was shown twice"
    assert sorted(n for n in numbers if "-E" in n) == sorted(existing), "a receipt was skipped"
    keys = [(datetime.fromisoformat(r["occurred_at"]), r["transaction_no"]) for r in seen]
    assert keys == sorted(keys, reverse=True)


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("points", {"limit": 0}),
        ("points", {"limit": 501}),
        ("points", {"limit": "ten"}),
        ("points", {"cursor": "not-a-cursor"}),
        ("receipts", {"limit": 0}),
        ("receipts", {"limit": 501}),
        ("receipts", {"cursor": "eyJsIjogMX0"}),
    ],
)
async def test_invalid_page_parameters_are_422(
    served: Served, path: str, params: dict[str, Any]
) -> None:
    """limit is 1 to 500; a cursor must be one this service made for this list."""
    async with client(served, served.read_key) as http:
        response = await http.get(f"/v1/customers/{unique_id('C')}/{path}", params=params)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM


async def test_limit_500_is_allowed(served: Served) -> None:
    """The upper bound itself is valid."""
    async with client(served, served.read_key) as http:
        response = await http.get(f"/v1/customers/{unique_id('C')}/receipts", params={"limit": 500})
    assert response.status_code == 200


async def test_a_receipt_is_returned_as_sent_with_exact_numbers(
    served: Served, db: Database
) -> None:
    """Unknown fields kept, numbers exact, plus returned false and return null."""
    tx, customer = unique_id("TX"), unique_id("C")
    document = (
        (
            '{"schema_version": 1, "transaction_no": "TXNO", "customer_id": "CUST", '
            '"total": 1980.10, "tax": 0.1000000000000000055511151231257827, '
            '"points_earned": 123456789012345678, "x-pos-extension": {"lane": 7}}'
        )
        .replace("TXNO", tx)
        .replace("CUST", customer)
    )
    await insert_receipt(
        db, transaction_no=tx, customer_id=customer, occurred_at=BASE, document=document
    )
    async with client(served, served.read_key) as http:
        response = await http.get(f"/v1/receipts/{tx}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert '"total": 1980.10' in response.text
    assert '"tax": 0.1000000000000000055511151231257827' in response.text
    body = json.loads(response.text, parse_float=str)
    assert body["points_earned"] == 123456789012345678
    assert body["x-pos-extension"] == {"lane": 7}
    assert body["returned"] is False
    assert body["return"] is None


async def test_a_returned_receipt_carries_every_outcome_and_the_latest(
    served: Served, db: Database
) -> None:
    """returned true; returns lists the acceptance then the rejection; return is the latest."""
    tx, customer = unique_id("TX"), unique_id("C")
    await insert_receipt(db, transaction_no=tx, customer_id=customer, occurred_at=BASE)
    accepted = outcome(tx, "first", status="accepted", customer_id=customer)
    first = await insert_return(
        db, transaction_no=tx, status="accepted", decided_at=BASE, result=accepted
    )
    await mark_returned(db, transaction_no=tx, return_event_id=first)
    rejected = outcome(tx, "second", status="rejected", reason="already_returned")
    await insert_return(
        db,
        transaction_no=tx,
        status="rejected",
        decided_at=BASE + timedelta(hours=1),
        result=rejected,
    )
    async with client(served, served.read_key) as http:
        receipt = (await http.get(f"/v1/receipts/{tx}")).json()
        latest = (await http.get(f"/v1/returns/{tx}")).json()
    assert receipt["returned"] is True
    assert receipt["returns"] == [accepted, rejected]
    assert receipt["return"] == rejected
    assert latest == rejected


async def test_a_receipt_with_only_a_rejected_return_shows_the_rejection(
    served: Served, db: Database
) -> None:
    """Not returned, but the latest decided outcome is there to see."""
    tx = unique_id("TX")
    await insert_receipt(db, transaction_no=tx, customer_id=None, occurred_at=BASE)
    rejected = outcome(tx, "r1", status="rejected", reason="already_returned")
    await insert_return(db, transaction_no=tx, status="rejected", decided_at=BASE, result=rejected)
    async with client(served, served.read_key) as http:
        receipt = (await http.get(f"/v1/receipts/{tx}")).json()
    assert receipt["returned"] is False
    assert receipt["return"] == rejected


async def test_unknown_receipts_and_returns_are_404(served: Served) -> None:
    """Nothing stored under the transaction number."""
    tx = unique_id("TX")
    async with client(served, served.read_key) as http:
        receipt = await http.get(f"/v1/receipts/{tx}")
        returned = await http.get(f"/v1/returns/{tx}")
    for response in (receipt, returned):
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM


async def test_a_waiting_return_is_pending_until_decided(served: Served, db: Database) -> None:
    """Only pending events: {"status": "pending"}; once decided, the latest outcome."""
    tx = unique_id("TX")
    await insert_return(db, transaction_no=tx, status="pending", decided_at=None)
    async with client(served, served.read_key) as http:
        pending = await http.get(f"/v1/returns/{tx}")
        rejected = outcome(tx, "late", status="rejected", reason="unknown_transaction")
        await insert_return(
            db, transaction_no=tx, status="rejected", decided_at=BASE, result=rejected
        )
        await insert_return(db, transaction_no=tx, status="pending", decided_at=None)
        decided = await http.get(f"/v1/returns/{tx}")
    assert pending.status_code == 200
    assert pending.json() == {"status": "pending"}
    assert decided.json() == rejected


async def test_the_outcome_decided_last_wins_whatever_its_timestamp(
    served: Served, db: Database
) -> None:
    """Ordered by the decision sequence: a later decision stamped earlier is still the latest."""
    tx = unique_id("TX")
    first = outcome(tx, "a", status="accepted")
    second = outcome(tx, "b", status="rejected", reason="already_returned")
    await insert_return(
        db, transaction_no=tx, status="accepted", decided_at=BASE + timedelta(1), result=first
    )
    await insert_return(db, transaction_no=tx, status="rejected", decided_at=BASE, result=second)
    async with client(served, served.read_key) as http:
        latest = (await http.get(f"/v1/returns/{tx}")).json()
    assert latest == second


async def test_expiring_points_are_summed_per_moment_soonest_first(
    served: Served, db: Database, settings: Settings
) -> None:
    """Lots with points left, by expiry moment; lots that never expire are not listed."""
    customer = unique_id("C")
    soon, later = BASE + timedelta(days=400), BASE + timedelta(days=800)
    sales = [
        receipt_document(customer, points_earned=10, points_expire_at=later.isoformat()),
        receipt_document(customer, points_earned=20, points_expire_at=soon.isoformat()),
        receipt_document(customer, points_earned=30, points_expire_at=later.isoformat()),
        receipt_document(customer, points_earned=40),
    ]
    await store_sales(db, settings, *sales)
    await store_sales(db, settings, receipt_document(customer, points_used=5))
    async with client(served, served.read_key) as http:
        body = (await http.get(f"/v1/customers/{customer}/points")).json()
    assert body["balance"] == 95
    assert body["expiring"] == [
        {"expires_at": "2027-12-27T01:00:00Z", "points": 15},
        {"expires_at": "2029-01-30T01:00:00Z", "points": 40},
    ]
