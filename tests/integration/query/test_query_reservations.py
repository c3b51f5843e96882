"""Reservations and campaign-wide limits (issue 20), through HTTP and the receipt consumer."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from punchcard_coupon_query.apikeys import create_api_key
from punchcard_coupon_query.reservations import store as reservation_store
from punchcard_devstack import Endpoints
from punchcard_platform import ledger
from punchcard_platform.db import Database, lock_customers
from punchcard_platform.settings import Settings
from punchcard_receipt_consumer.handler import ReceiptHandler

from punchcard.checkout import Checkout
from punchcard.simulator import SimulationOptions, simulate
from tests.documents import receipt_document
from tests.helpers import consume, eventually, unique_id
from tests.integration.query.support import Served, client, insert_usage
from tests.integration.query.test_query_serve import RUN, free_port
from tests.integration.receipts.support import Feeder, outbox

pytestmark = pytest.mark.integration


@pytest.fixture
async def checkout_key(db: Database) -> str:
    """A key of scope checkout."""
    return (await create_api_key(db, "checkout", "reservations test"))[1]


async def put_coupon(served: Served, coupon_id: str, **terms: Any) -> None:
    """Create a coupon for everyone with these terms."""
    async with client(served, served.admin_key) as http:
        response = await http.put(f"/v1/coupons/{coupon_id}", json={"name": "Tea", **terms})
    assert response.status_code in {200, 201}, response.text


async def reserve(
    http: httpx.AsyncClient, customer_id: str, coupon_id: str, **body: Any
) -> httpx.Response:
    """POST a reservation; ``headers`` in ``body`` go as headers."""
    headers = body.pop("headers", {})
    return await http.post(
        f"/v1/customers/{customer_id}/coupons/{coupon_id}/reservations", json=body, headers=headers
    )


async def eligibility(served: Served, customer_id: str, coupon_id: str) -> dict[str, Any]:
    """The customer's Eligibility of the coupon."""
    async with client(served, served.read_key) as http:
        response = await http.get(f"/v1/customers/{customer_id}/coupons/{coupon_id}")
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_a_read_key_is_refused_every_reservation_call(served: Served) -> None:
    """403 for read on POST, DELETE and GET; a checkout key may still read."""
    customer, coupon = unique_id("C"), unique_id("K")
    await put_coupon(served, coupon, uses_permitted=1)
    async with client(served, served.read_key) as http:
        assert (await reserve(http, customer, coupon)).status_code == 403
        assert (await http.delete(f"/v1/reservations/{unique_id('R')}")).status_code == 403
        assert (await http.get(f"/v1/customers/{customer}/reservations")).status_code == 403


async def test_a_checkout_key_may_read_but_not_manage_coupons(
    served: Served, checkout_key: str
) -> None:
    """checkout may call everything read may; the catalog stays admin's."""
    customer, coupon = unique_id("C"), unique_id("K")
    await put_coupon(served, coupon, uses_permitted=1)
    async with client(served, checkout_key) as http:
        assert (await http.get(f"/v1/customers/{customer}/coupons")).status_code == 200
        refused = await http.put(f"/v1/coupons/{coupon}", json={"name": "x"})
        assert refused.status_code == 403


async def test_a_reservation_holds_uses_until_released(served: Served, checkout_key: str) -> None:
    """201 with the contract's fields; the held use shows as reserved; DELETE frees it."""
    customer, coupon = unique_id("C"), unique_id("K")
    await put_coupon(served, coupon, uses_permitted=2, total_uses_permitted=50)
    async with client(served, checkout_key) as http:
        made = await reserve(http, customer, coupon, uses=2, store_id="S1", terminal_id="T1")
        assert made.status_code == 201, made.text
        body = made.json()
        assert set(body) == {
            "reservation_id",
            "customer_id",
            "coupon_id",
            "uses",
            "expires_at",
            "uses_remaining",
            "total_uses_remaining",
        }
        assert (body["customer_id"], body["coupon_id"], body["uses"]) == (customer, coupon, 2)
        assert (body["uses_remaining"], body["total_uses_remaining"]) == (0, 48)
        held = await eligibility(served, customer, coupon)
        assert (held["uses_reserved"], held["uses_remaining"], held["reason"]) == (2, 0, "reserved")
        assert held["total_uses_remaining"] == 48
        again = await reserve(http, customer, coupon)
        assert (again.status_code, again.json()["reason"]) == (409, "reserved")
        listed = await http.get(f"/v1/customers/{customer}/reservations")
        assert [r["reservation_id"] for r in listed.json()["reservations"]] == [
            body["reservation_id"]
        ]
        [shown] = listed.json()["reservations"]
        assert (shown["uses_remaining"], shown["total_uses_remaining"]) == (0, 48)
        gone = await http.delete(f"/v1/reservations/{body['reservation_id']}")
        assert gone.status_code == 204
        assert (await http.delete(f"/v1/reservations/{body['reservation_id']}")).status_code == 204
        assert (await http.delete(f"/v1/reservations/{unique_id('R')}")).status_code == 404
        assert (await http.get(f"/v1/customers/{customer}/reservations")).json()[
            "reservations"
        ] == []
    freed = await eligibility(served, customer, coupon)
    assert (freed["uses_reserved"], freed["uses_remaining"], freed["eligible"]) == (0, 2, True)


async def test_refusals_name_the_reason(served: Served, db: Database, checkout_key: str) -> None:
    """404 unknown coupon; 409 exceeds_remaining, exhausted, inactive, store_not_allowed."""
    customer, coupon, used, shut = unique_id("C"), unique_id("K"), unique_id("K"), unique_id("K")
    await put_coupon(served, coupon, uses_permitted=2, store_ids=["S1"])
    await put_coupon(served, used, uses_permitted=1)
    await put_coupon(served, shut, active=False)
    await insert_usage(db, customer_id=customer, coupon_id=used, uses_made=1)
    async with client(served, checkout_key) as http:
        assert (await reserve(http, customer, unique_id("K"))).status_code == 404
        cases = [
            (await reserve(http, customer, coupon, uses=3), "exceeds_remaining"),
            (await reserve(http, customer, coupon, store_id="S9"), "store_not_allowed"),
            (await reserve(http, customer, used), "exhausted"),
            (await reserve(http, customer, shut), "inactive"),
        ]
        for response, reason in cases:
            assert response.status_code == 409
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["reason"] == reason
        assert (await reserve(http, customer, coupon, uses=0)).status_code == 422
        assert (await reserve(http, customer, coupon, ttl_seconds=86_401)).status_code == 422


async def test_an_idempotent_retry_answers_the_same_reservation(
    served: Served, db: Database, checkout_key: str
) -> None:
    """Same key and body: 201, same reservation, one hold; other body: 409; other API key: new."""
    customer, coupon = unique_id("C"), unique_id("K")
    await put_coupon(served, coupon, uses_permitted=5)
    key = {"Idempotency-Key": unique_id("idem")}
    async with client(served, checkout_key) as http:
        first = await reserve(http, customer, coupon, uses=2, headers=key)
        retried = await asyncio.gather(
            *(reserve(http, customer, coupon, uses=2, headers=key) for _ in range(5))
        )
        assert first.status_code == 201
        assert {r.status_code for r in retried} == {201}
        assert {r.json()["reservation_id"] for r in retried} == {first.json()["reservation_id"]}
        spelled_out = await reserve(http, customer, coupon, uses=2, ttl_seconds=900, headers=key)
        assert spelled_out.json()["reservation_id"] == first.json()["reservation_id"]
        other = await reserve(http, customer, coupon, uses=1, headers=key)
        assert (other.status_code, other.json()["reason"]) == (409, "idempotency_conflict")
    other_key = (await create_api_key(db, "checkout", "another terminal"))[1]
    async with client(served, other_key) as http:
        fresh = await reserve(http, customer, coupon, uses=2, headers=key)
        assert fresh.status_code == 201
        assert fresh.json()["reservation_id"] != first.json()["reservation_id"]
    assert (await eligibility(served, customer, coupon))["uses_reserved"] == 4


async def test_unusual_calls_are_answered_as_documented_and_lose_nothing(
    served: Served, checkout_key: str
) -> None:
    """Bodies the fast path does not take (unknown or invalid fields, not JSON, chunked)
    reach FastAPI whole: 422 for the invalid ones, 201 for the chunked one."""
    customer, coupon = unique_id("C"), unique_id("K")
    await put_coupon(served, coupon, uses_permitted=5)
    path = f"/v1/customers/{customer}/coupons/{coupon}/reservations"
    async with client(served, checkout_key) as http:
        ordinary = await reserve(http, customer, coupon)  # the key is known from here on
        assert ordinary.status_code == 201, ordinary.text
        unknown = await reserve(http, customer, coupon, uses=1, colour="red")
        too_many = await reserve(http, customer, coupon, uses=101)
        not_json = await http.post(
            path, content=b"uses=1", headers={"Content-Type": "application/json"}
        )
        for refused in (unknown, too_many, not_json):
            assert refused.status_code == 422, refused.text
            assert refused.headers["content-type"] == "application/problem+json"
        assert "colour" in unknown.text

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"uses": '
            yield b"2}"

        chunked = await http.post(
            path, content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert chunked.status_code == 201, chunked.text
        assert chunked.json()["uses_remaining"] == 2
        assert set(chunked.json()) == set(ordinary.json())
    assert (await eligibility(served, customer, coupon))["uses_reserved"] == 3


async def test_a_refused_call_leaves_its_idempotency_key_free(
    served: Served, db: Database, checkout_key: str
) -> None:
    """A 409 is not remembered: once a use is free again, the same key reserves it."""
    customer, coupon = unique_id("C"), unique_id("K")
    await put_coupon(served, coupon, uses_permitted=1)
    key = {"Idempotency-Key": unique_id("idem")}
    async with client(served, checkout_key) as http:
        holder = (await reserve(http, customer, coupon)).json()["reservation_id"]
        assert (await reserve(http, customer, coupon, headers=key)).status_code == 409
        await http.delete(f"/v1/reservations/{holder}")
        assert (await reserve(http, customer, coupon, headers=key)).status_code == 201


async def test_a_reservation_stops_counting_at_its_expiry(
    served: Served, checkout_key: str
) -> None:
    """No job runs: the use is free again once expires_at has passed; DELETE still says 204."""
    customer, coupon = unique_id("C"), unique_id("K")
    await put_coupon(served, coupon, uses_permitted=1)
    async with client(served, checkout_key) as http:
        made = await reserve(http, customer, coupon, ttl_seconds=1)
        assert made.status_code == 201

        async def free() -> bool:
            return bool((await eligibility(served, customer, coupon))["eligible"])

        await eventually(free, timeout=10, what="the reservation to expire")
        listed = await http.get(f"/v1/customers/{customer}/reservations")
        assert listed.json()["reservations"] == []
        assert (
            await http.delete(f"/v1/reservations/{made.json()['reservation_id']}")
        ).status_code == 204
        assert (await reserve(http, customer, coupon)).status_code == 201


async def test_holds_of_every_customer_make_a_capped_coupon_sold_out(
    served: Served, checkout_key: str
) -> None:
    """total_uses_permitted counts everyone's holds: the third customer sees sold_out."""
    customers, coupon_id = [unique_id("C") for _ in range(3)], unique_id("K")
    await put_coupon(served, coupon_id, total_uses_permitted=2)
    async with client(served, checkout_key) as http:
        for customer in customers[:2]:
            assert (await reserve(http, customer, coupon_id)).status_code == 201
        late = await reserve(http, customers[2], coupon_id)
        assert (late.status_code, late.json()["reason"]) == (409, "sold_out")
        listed = await http.get(
            f"/v1/customers/{customers[2]}/coupons", params={"include_ineligible": "true"}
        )
        entry = next(c for c in listed.json()["coupons"] if c["coupon_id"] == coupon_id)
        assert (entry["reason"], entry["total_uses_remaining"]) == ("sold_out", 0)
        default = await http.get(f"/v1/customers/{customers[2]}/coupons")
        assert coupon_id not in {c["coupon_id"] for c in default.json()["coupons"]}


@pytest.fixture
async def two_workers(stack: Endpoints) -> AsyncIterator[str]:
    """``punchcard serve coupon-query`` with PUNCHCARD_HTTP_WORKERS=2: its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "PUNCHCARD_DATABASE_URL": stack.database_url,
        "PUNCHCARD_HTTP_HOST": "127.0.0.1",
        "PUNCHCARD_HTTP_PORT": str(port),
        "PUNCHCARD_HTTP_WORKERS": "2",
        "PUNCHCARD_LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RUN, env=env, stdout=asyncio.subprocess.DEVNULL
    )
    base_url = f"http://127.0.0.1:{port}"
    try:

        async def ready() -> bool:
            if process.returncode is not None:
                raise AssertionError(f"coupon-query exited with {process.returncode}")
            try:
                async with httpx.AsyncClient() as http:
                    return (await http.get(f"{base_url}/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ready, timeout=30, what="coupon-query ready")
        yield base_url
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=30)
            except TimeoutError:
                process.kill()
                await process.wait()


async def test_200_simultaneous_reservations_through_two_workers_hold_exactly_what_remains(
    two_workers: str, served: Served, db: Database, checkout_key: str
) -> None:
    """10 uses left in total (3 made): exactly 10 of 200 customers get one; the rest sold_out.
    One customer with 10 uses left asking 200 times at once: exactly 10 succeed."""
    capped, personal, alone = unique_id("K"), unique_id("K"), unique_id("C")
    await put_coupon(served, capped, total_uses_permitted=13)
    await put_coupon(served, personal, uses_permitted=12)
    await insert_usage(db, customer_id=unique_id("C"), coupon_id=capped, uses_made=3)
    await insert_usage(db, customer_id=alone, coupon_id=personal, uses_made=2)
    async with db.transaction() as conn:  # the 3 uses as the ledger keeps them in total
        await conn.execute(
            "INSERT INTO coupon_totals (coupon_id, shard, uses_made) VALUES ($1, 5, 3)", capped
        )
    limits = httpx.Limits(max_connections=200)
    headers = {"Authorization": f"Bearer {checkout_key}"}
    async with httpx.AsyncClient(
        base_url=two_workers, headers=headers, limits=limits, timeout=60
    ) as http:
        everyone = await asyncio.gather(
            *(reserve(http, unique_id("C"), capped) for _ in range(200))
        )
        one = await asyncio.gather(*(reserve(http, alone, personal) for _ in range(200)))
    assert Counter(r.status_code for r in everyone) == {201: 10, 409: 190}
    assert {r.json()["reason"] for r in everyone if r.status_code == 409} == {"sold_out"}
    assert Counter(r.status_code for r in one) == {201: 10, 409: 190}
    assert {r.json()["reason"] for r in one if r.status_code == 409} == {"reserved"}
    async with db.connection() as conn:
        held = await conn.fetchval(
            "SELECT sum(uses) FROM reservations WHERE coupon_id = ANY($1::text[])",
            [capped, personal],
        )
    assert held == 20


@pytest.fixture
def feeder(db: Database, settings: Settings) -> tuple[ReceiptHandler, Feeder]:
    """The receipt handler and a feeder of its topic's records."""
    handler = ReceiptHandler(db, settings.topics)
    return handler, Feeder(handler, settings.topics.receipts)


async def test_a_sale_naming_its_reservation_consumes_it_and_counts_once(
    served: Served,
    db: Database,
    checkout_key: str,
    feeder: tuple[ReceiptHandler, Feeder],
) -> None:
    """The held use becomes a use made: reserved 0, made 1, exhausted; the event names it."""
    handler, records = feeder
    customer, coupon = unique_id("C"), unique_id("K")
    await put_coupon(served, coupon, uses_permitted=1, total_uses_permitted=100)
    async with client(served, checkout_key) as http:
        reservation_id = (await reserve(http, customer, coupon)).json()["reservation_id"]
        sale = receipt_document(customer, coupons=[(coupon, 1)])
        sale["coupons"][0]["reservation_id"] = reservation_id
        assert await handler.apply(records.batch(sale)) == []
        after = await eligibility(served, customer, coupon)
        assert (after["uses_made"], after["uses_reserved"], after["reason"]) == (
            1,
            0,
            "exhausted",
        )
        assert after["total_uses_remaining"] == 99
        assert (await http.get(f"/v1/customers/{customer}/reservations")).json()[
            "reservations"
        ] == []
        assert (await http.delete(f"/v1/reservations/{reservation_id}")).status_code == 204
    (event,) = [e["payload"] for e in await outbox(db, [customer]) if "coupon_id" in e["payload"]]
    assert event["reservation_id"] == reservation_id
    assert (event["uses_made"], event["total_uses_made"], event["over_limit"]) == (1, 1, False)
    async with db.connection() as conn:
        row = await conn.fetchrow(
            "SELECT status, transaction_no FROM reservations WHERE reservation_id = $1",
            reservation_id,
        )
    assert row is not None
    assert (row["status"], row["transaction_no"]) == ("consumed", sale["transaction_no"])


async def test_a_sale_with_another_customers_or_an_expired_reservation_is_still_recorded(
    served: Served,
    db: Database,
    checkout_key: str,
    feeder: tuple[ReceiptHandler, Feeder],
) -> None:
    """The sale happened: its use counts; someone else's hold stays; an expired one counts 0."""
    handler, records = feeder
    holder, buyer, coupon = unique_id("C"), unique_id("C"), unique_id("K")
    await put_coupon(served, coupon, uses_permitted=1)
    async with client(served, checkout_key) as http:
        theirs = (await reserve(http, holder, coupon)).json()["reservation_id"]
        lapsing = (await reserve(http, buyer, coupon)).json()["reservation_id"]
    async with db.transaction() as conn:  # expired this very moment
        await conn.execute(
            "UPDATE reservations SET expires_at = clock_timestamp() WHERE reservation_id = $1",
            lapsing,
        )
    first = receipt_document(buyer, coupons=[(coupon, 1)])
    first["coupons"][0]["reservation_id"] = theirs
    second = receipt_document(buyer, coupons=[(coupon, 1)])
    second["coupons"][0]["reservation_id"] = lapsing
    assert await handler.apply(records.batch(first, second)) == []
    bought = await eligibility(served, buyer, coupon)
    assert (bought["uses_made"], bought["uses_reserved"]) == (2, 0)
    held = await eligibility(served, holder, coupon)
    assert (held["uses_reserved"], held["reason"]) == (1, "reserved")
    events = [e["payload"] for e in await outbox(db, [buyer]) if "coupon_id" in e["payload"]]
    assert [e["over_limit"] for e in events] == [False, True]


async def test_the_campaign_total_counts_every_customer_and_takes_returns_back(
    served: Served, db: Database, feeder: tuple[ReceiptHandler, Feeder]
) -> None:
    """Uses past total_uses_permitted are flagged over_limit; a return gives back to the total."""
    handler, records = feeder
    coupon = unique_id("K")
    customers = [unique_id("C") for _ in range(3)]
    await put_coupon(served, coupon, total_uses_permitted=2, restore_on_return=True)
    sales = [receipt_document(c, coupons=[(coupon, 1)]) for c in customers]
    assert await handler.apply(records.batch(*sales)) == []
    events = [e["payload"] for e in await outbox(db, customers) if "coupon_id" in e["payload"]]
    assert sorted(e["total_uses_made"] for e in events) == [1, 2, 3]
    assert sorted(e["over_limit"] for e in events) == [False, False, True]
    async with db.transaction() as conn:
        await lock_customers(conn, [customers[0]])
        booked = await ledger.book(
            conn,
            [],
            [
                ledger.UsePosting(
                    customers[0], coupon, sales[0]["transaction_no"], "r1", "return", -1
                )
            ],
            committed_at=datetime.now(UTC),
        )
    (returned,) = booked.posted.uses
    assert (returned.delta, returned.total_uses_made) == (-1, 2)
    answer = await eligibility(served, unique_id("C"), coupon)
    assert (answer["reason"], answer["total_uses_remaining"]) == ("sold_out", 0)
    async with db.connection() as conn:
        total = await conn.fetchval(
            "SELECT sum(uses_made) FROM coupon_totals WHERE coupon_id = $1", coupon
        )
    assert total == 2


async def test_the_cleanup_deletes_only_reservations_ended_a_day_ago(
    served: Served, db: Database, checkout_key: str
) -> None:
    """Active and recently ended reservations stay; long-ended ones and old keys go."""
    customer, coupon = unique_id("C"), unique_id("K")
    await put_coupon(served, coupon, uses_permitted=5)
    async with client(served, checkout_key) as http:
        made = [
            (
                await reserve(http, customer, coupon, headers={"Idempotency-Key": unique_id("i")})
            ).json()["reservation_id"]
            for _ in range(3)
        ]
        await http.delete(f"/v1/reservations/{made[1]}")
    async with db.transaction() as conn:
        await conn.execute(
            "UPDATE reservations SET expires_at = now() - interval '2 days' "
            "WHERE reservation_id = $1",
            made[2],
        )
        await conn.execute(
            "UPDATE reservation_requests SET created_at = now() - interval '25 hours' "
            "WHERE response LIKE '%' || $1 || '%'",
            made[2],
        )
        await reservation_store.delete_ended(conn)
        left = await conn.fetch(
            "SELECT reservation_id FROM reservations WHERE reservation_id = ANY($1::text[])",
            made,
        )
        keys = await conn.fetchval(
            "SELECT count(*) FROM reservation_requests WHERE response LIKE '%' || $1 || '%'",
            made[2],
        )
    assert {row["reservation_id"] for row in left} == {made[0], made[1]}
    assert keys == 0


async def test_the_simulator_reserves_before_sales_and_names_the_reservations(
    served: Served, db: Database, settings: Settings
) -> None:
    """Every member sale reserves first: the held uses stop at the campaign's cap, each
    receipt names its own reservation, and refused holds still sell."""
    coupon, prefix = unique_id("K"), unique_id("C") + "-"
    await put_coupon(served, coupon, total_uses_permitted=4)
    options = SimulationOptions(
        receipts=40,
        customers=10,
        coupons=(coupon,),
        anonymous_share=0,
        return_share=0,
        reserve_share=1,
        lapse_share=0.5,
        seed=20,
        customer_prefix=prefix,
        run_tag=unique_id("r"),
    )
    checkout = Checkout(served.base_url, served.admin_key)
    try:
        summary = await simulate(settings, options, checkout=checkout)
    finally:
        await checkout.aclose()
    records = await consume(settings, settings.topics.receipts, count=summary.receipts)
    named = {
        coupon_use["reservation_id"]: document["customer_id"]
        for document in (json.loads(r.value) for r in records)
        for coupon_use in document["coupons"]
        if "reservation_id" in coupon_use
    }
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT reservation_id, customer_id, uses FROM reservations WHERE coupon_id = $1",
            coupon,
        )
    assert len(named) == summary.reservations >= 1
    assert summary.refused_reservations > 0
    assert sum(row["uses"] for row in rows) <= 4
    stored = {row["reservation_id"]: row["customer_id"] for row in rows}
    assert {k: stored[k] for k in named} == named
    assert len(rows) == summary.reservations + summary.lapsing_reservations


async def test_sales_of_a_capped_coupon_leave_its_row_version_and_so_the_terms_cache_alone(
    served: Served, db: Database, feeder: tuple[ReceiptHandler, Feeder]
) -> None:
    """The total moves in coupon_totals; the coupon row (whose xmin keys the terms cache)
    is untouched by sales, while the list still shows the new total."""
    handler, records = feeder
    coupon = unique_id("K")
    await put_coupon(served, coupon, total_uses_permitted=100)

    async def version() -> str:
        async with db.connection() as conn:
            found: str = await conn.fetchval(
                "SELECT xmin::text FROM coupons WHERE coupon_id = $1", coupon
            )
        return found

    before = await version()
    sales = [receipt_document(unique_id("C"), coupons=[(coupon, 1)]) for _ in range(5)]
    assert await handler.apply(records.batch(*sales)) == []
    assert await version() == before
    answer = await eligibility(served, unique_id("C"), coupon)
    assert answer["total_uses_remaining"] == 95
