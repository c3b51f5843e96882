"""The three services as processes, fed through Kafka and read through HTTP."""

from __future__ import annotations

import json
from collections.abc import Awaitable

import httpx
from punchcard_coupon_query.apikeys import create_api_key
from punchcard_platform.db import Database
from punchcard_platform.settings import Settings

from tests.documents import encode, receipt_document, return_document
from tests.e2e.conftest import StartService
from tests.helpers import consume, eventually, produce, unique_id


async def test_coupon_uses_from_kafka_show_in_the_api_until_the_coupon_is_exhausted(
    settings: Settings, db: Database, start_service: StartService
) -> None:
    """Uses counted from Kafka show in the API; at the limit the coupon leaves the list."""
    start_service("receipt-consumer")
    api = start_service("coupon-query")
    _, admin_key = await create_api_key(db, "admin", "e2e")
    customer, coupon = unique_id("C"), unique_id("CPN")
    headers = {"Authorization": f"Bearer {admin_key}"}
    async with httpx.AsyncClient(base_url=api.url, headers=headers) as http:
        created = await http.put(
            f"/v1/coupons/{coupon}", json={"name": "Tea 10% off", "uses_permitted": 3}
        )
        assert created.status_code == 201, created.text

        await produce(
            settings,
            settings.topics.receipts,
            [(customer.encode(), encode(receipt_document(customer, coupons=[(coupon, 2)])))],
        )

        async def uses_made() -> int:
            response = await http.get(f"/v1/customers/{customer}/coupons/{coupon}")
            return int(response.json()["uses_made"])

        await eventually(lambda: _equals(uses_made(), 2), what="two uses counted")
        listed = (await http.get(f"/v1/customers/{customer}/coupons")).json()
        entry = next(c for c in listed["coupons"] if c["coupon_id"] == coupon)
        assert (entry["uses_made"], entry["uses_remaining"], entry["eligible"]) == (2, 1, True)

        await produce(
            settings,
            settings.topics.receipts,
            [(customer.encode(), encode(receipt_document(customer, coupons=[(coupon, 1)])))],
        )
        await eventually(lambda: _equals(uses_made(), 3), what="third use counted")
        listed = (await http.get(f"/v1/customers/{customer}/coupons")).json()
        assert coupon not in {c["coupon_id"] for c in listed["coupons"]}
        everything = (
            await http.get(
                f"/v1/customers/{customer}/coupons", params={"include_ineligible": "true"}
            )
        ).json()
        entry = next(c for c in everything["coupons"] if c["coupon_id"] == coupon)
        assert (entry["eligible"], entry["reason"], entry["uses_remaining"]) == (
            False,
            "exhausted",
            0,
        )


async def test_a_second_return_of_a_sale_is_refused_and_points_move_once(
    settings: Settings, db: Database, start_service: StartService
) -> None:
    """The return desk sees accepted, then already_returned; the balance moves once."""
    start_service("receipt-consumer")
    start_service("returns")
    api = start_service("coupon-query")
    _, read_key = await create_api_key(db, "read", "e2e")
    customer = unique_id("C")
    sale = receipt_document(customer, points_used=100, points_earned=19)
    tx = sale["transaction_no"]
    await produce(settings, settings.topics.receipts, [(customer.encode(), encode(sale))])
    first, second = return_document(tx), return_document(tx)
    await produce(
        settings,
        settings.topics.returns,
        [(tx.encode(), encode(first)), (tx.encode(), encode(second))],
    )

    outcomes = await consume(settings, settings.topics.return_outcomes, count=2, timeout=60)
    by_event = {json.loads(r.value)["return_event_id"]: json.loads(r.value) for r in outcomes}
    assert by_event[first["event_id"]]["status"] == "accepted"
    assert by_event[first["event_id"]]["points_restored"] == 100
    assert by_event[first["event_id"]]["points_revoked"] == 19
    assert (by_event[second["event_id"]]["status"], by_event[second["event_id"]]["reason"]) == (
        "rejected",
        "already_returned",
    )

    async with httpx.AsyncClient(
        base_url=api.url, headers={"Authorization": f"Bearer {read_key}"}
    ) as http:
        points = (await http.get(f"/v1/customers/{customer}/points")).json()
        assert points["balance"] == -19 + 19 - 100 + 100
        assert sorted(e["kind"] for e in points["ledger"]) == ["burn", "earn", "restore", "revoke"]
        stored = (await http.get(f"/v1/receipts/{tx}")).json()
        assert stored["returned"] is True
        assert [r["status"] for r in stored["returns"]] == ["accepted", "rejected"]
        latest = (await http.get(f"/v1/returns/{tx}")).json()
        assert latest["status"] == "rejected"
        assert stored["return"] == latest


async def _equals(value: Awaitable[object], expected: object) -> bool:
    return await value == expected
