"""Coupon administration and eligibility, over real HTTP against the real database."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from punchcard_coupon_query import queries
from punchcard_coupon_query.hotroute.batcher import CouponListBatcher
from punchcard_platform.db import Database

from tests.helpers import unique_id
from tests.integration.query.support import Served, client, insert_usage

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2026, 12, 1, tzinfo=UTC)
DURING = "2026-11-15T12:00:00+09:00"


def body(**changes: Any) -> dict[str, Any]:
    """A coupon usable once by everyone in November 2026, changed as asked."""
    result: dict[str, Any] = {
        "name": "Tea 10% off",
        "description": "Any green tea",
        "uses_permitted": 1,
        "valid_from": START.isoformat(),
        "valid_until": END.isoformat(),
    }
    result.update(changes)
    return result


async def put(served: Served, coupon_id: str, payload: dict[str, Any]) -> Any:
    """PUT a coupon with the admin key, asserting success."""
    async with client(served, served.admin_key) as http:
        response = await http.put(f"/v1/coupons/{coupon_id}", json=payload)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def test_put_creates_with_201_then_replaces_with_200(served: Served) -> None:
    """The first PUT creates, the next replaces the whole coupon."""
    coupon_id = unique_id("CP")
    async with client(served, served.admin_key) as http:
        created = await http.put(f"/v1/coupons/{coupon_id}", json=body(store_ids=["S1"]))
        replaced = await http.put(f"/v1/coupons/{coupon_id}", json=body(name="Renamed"))
        fetched = await http.get(f"/v1/coupons/{coupon_id}")
    assert created.status_code == 201
    assert created.json() == {
        "coupon_id": coupon_id,
        "name": "Tea 10% off",
        "description": "Any green tea",
        "uses_permitted": 1,
        "valid_from": "2026-11-01T00:00:00Z",
        "valid_until": "2026-12-01T00:00:00Z",
        "active": True,
        "customer_ids": None,
        "store_ids": ["S1"],
        "restore_on_return": True,
        "total_uses_permitted": None,
    }
    assert replaced.status_code == 200
    assert replaced.json()["name"] == "Renamed"
    assert replaced.json()["store_ids"] is None
    assert fetched.json() == replaced.json()


async def test_the_catalog_lists_every_coupon_in_order(served: Served) -> None:
    """GET /v1/coupons holds the coupons just written, ordered by id."""
    ids = sorted(unique_id("CP") for _ in range(3))
    for coupon_id in reversed(ids):
        await put(served, coupon_id, body())
    async with client(served, served.read_key) as http:
        listed = (await http.get("/v1/coupons")).json()["coupons"]
    mine = [c["coupon_id"] for c in listed if c["coupon_id"] in ids]
    assert mine == ids
    all_ids = [c["coupon_id"] for c in listed]
    assert all_ids == sorted(all_ids)


async def test_unknown_coupons_are_404(served: Served) -> None:
    """GET and DELETE of a coupon not in the catalog."""
    coupon_id = unique_id("CP")
    async with client(served, served.admin_key) as http:
        got = await http.get(f"/v1/coupons/{coupon_id}")
        deleted = await http.delete(f"/v1/coupons/{coupon_id}")
        eligibility = await http.get(f"/v1/customers/{unique_id('C')}/coupons/{coupon_id}")
    for response in (got, deleted, eligibility):
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        (body(valid_until="2026-10-01T00:00:00Z"), "body"),
        (body(valid_until=START.isoformat()), "body"),
        (body(uses_permitted=0), "uses_permitted"),
        (body(uses_permitted=-3), "uses_permitted"),
        (body(valid_from="2026-11-01T00:00:00"), "valid_from"),
        (body(customer_ids=["ok", "not ok"]), "customer_ids"),
        (body(name=""), "name"),
        (body(surprise=True), "surprise"),
        ({"description": "no name"}, "name"),
        (body(coupon_id="SOMETHING-ELSE"), "coupon_id"),
    ],
)
async def test_invalid_coupons_are_422_problems(
    served: Served, payload: dict[str, Any], where: str
) -> None:
    """Validation failures, FastAPI's own included, answer 422 application/problem+json."""
    async with client(served, served.admin_key) as http:
        response = await http.put(f"/v1/coupons/{unique_id('CP')}", json=payload)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == 422
    assert any(where in [str(part) for part in error["loc"]] for error in problem["errors"])


async def test_more_than_100000_targeted_customers_is_422(served: Served) -> None:
    """The contract's limit of customers per coupon."""
    customers = [f"C{i}" for i in range(100_001)]
    async with client(served, served.admin_key) as http:
        response = await http.put(
            f"/v1/coupons/{unique_id('CP')}", json=body(customer_ids=customers)
        )
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM


async def test_a_body_that_is_not_json_is_422(served: Served) -> None:
    """Malformed JSON is a validation error too."""
    async with client(served, served.admin_key) as http:
        response = await http.put(
            f"/v1/coupons/{unique_id('CP')}",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM


@pytest.mark.parametrize(
    "path",
    [
        "/v1/coupons/has%20space",
        "/v1/coupons/" + "x" * 65,
        "/v1/customers/bad!id/coupons",
        "/v1/customers/bad!id/points",
        "/v1/customers/bad!id/receipts",
        "/v1/receipts/bad!id",
        "/v1/returns/bad!id",
        "/v1/customers/C1/coupons/bad!id",
    ],
)
async def test_invalid_identifiers_in_paths_are_422(served: Served, path: str) -> None:
    """Identifiers are 1 to 64 of A-Z a-z 0-9 . _ : -."""
    async with client(served, served.admin_key) as http:
        response = await http.get(path)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM


async def test_delete_deactivates_and_keeps_the_usage_history(served: Served, db: Database) -> None:
    """DELETE answers the inactive coupon; uses made stay and eligibility says inactive."""
    coupon_id, customer = unique_id("CP"), unique_id("C")
    await put(served, coupon_id, body(uses_permitted=5))
    await insert_usage(db, customer_id=customer, coupon_id=coupon_id, uses_made=2)
    async with client(served, served.admin_key) as http:
        deleted = await http.delete(f"/v1/coupons/{coupon_id}")
        single = await http.get(
            f"/v1/customers/{customer}/coupons/{coupon_id}", params={"at": DURING}
        )
        listed = await http.get(
            f"/v1/customers/{customer}/coupons",
            params={"at": DURING, "include_ineligible": "true"},
        )
    assert deleted.status_code == 200
    assert deleted.json()["active"] is False
    assert single.json()["reason"] == "inactive"
    assert single.json()["uses_made"] == 2
    assert coupon_id not in [c["coupon_id"] for c in listed.json()["coupons"]]


async def test_every_reason_is_reported_and_listed_as_the_contract_says(
    served: Served, db: Database
) -> None:
    """One coupon per reason; the list shows eligible ones, plus some with include_ineligible."""
    me, someone = unique_id("C"), unique_id("C")
    ids = {name: unique_id(name) for name in ("OK", "INACT", "EARLY", "LATE", "OTHER", "MINE")}
    ids |= {name: unique_id(name) for name in ("STORE", "USED", "UNLIM")}
    await put(served, ids["OK"], body())
    await put(served, ids["INACT"], body(active=False))
    await put(served, ids["EARLY"], body(valid_from="2026-11-20T00:00:00Z"))
    await put(served, ids["LATE"], body(valid_until="2026-11-10T00:00:00Z"))
    await put(served, ids["OTHER"], body(customer_ids=[someone]))
    await put(served, ids["MINE"], body(customer_ids=[someone, me]))
    await put(served, ids["STORE"], body(store_ids=["S0001", "S0002"]))
    await put(served, ids["USED"], body(uses_permitted=2))
    await put(served, ids["UNLIM"], body(uses_permitted=None))
    await insert_usage(db, customer_id=me, coupon_id=ids["USED"], uses_made=2)
    await insert_usage(db, customer_id=me, coupon_id=ids["UNLIM"], uses_made=7)

    params = {"at": DURING, "store_id": "S0042"}
    async with client(served, served.read_key) as http:
        singles = {
            name: (await http.get(f"/v1/customers/{me}/coupons/{cid}", params=params)).json()
            for name, cid in ids.items()
        }
        eligible = await http.get(f"/v1/customers/{me}/coupons", params=params)
        everything = await http.get(
            f"/v1/customers/{me}/coupons", params={**params, "include_ineligible": "true"}
        )

    assert {name: answer["reason"] for name, answer in singles.items()} == {
        "OK": None,
        "INACT": "inactive",
        "EARLY": "not_started",
        "LATE": "expired",
        "OTHER": "not_targeted",
        "MINE": None,
        "STORE": "store_not_allowed",
        "USED": "exhausted",
        "UNLIM": None,
    }
    assert singles["USED"]["uses_made"] == 2
    assert singles["USED"]["uses_remaining"] == 0
    assert singles["UNLIM"]["uses_remaining"] is None
    assert singles["OK"] == {
        "coupon_id": ids["OK"],
        "name": "Tea 10% off",
        "description": "Any green tea",
        "uses_permitted": 1,
        "valid_from": "2026-11-01T00:00:00Z",
        "valid_until": "2026-12-01T00:00:00Z",
        "uses_made": 0,
        "uses_reserved": 0,
        "uses_remaining": 1,
        "total_uses_remaining": None,
        "eligible": True,
        "reason": None,
    }

    by_id = {v: k for k, v in ids.items()}
    listed = eligible.json()
    assert listed["customer_id"] == me
    assert datetime.fromisoformat(listed["at"]) == datetime.fromisoformat(DURING)
    assert sorted(by_id[c["coupon_id"]] for c in listed["coupons"] if c["coupon_id"] in by_id) == [
        "MINE",
        "OK",
        "UNLIM",
    ]
    assert all(c["eligible"] for c in listed["coupons"])
    assert sorted(
        by_id[c["coupon_id"]] for c in everything.json()["coupons"] if c["coupon_id"] in by_id
    ) == ["EARLY", "LATE", "MINE", "OK", "STORE", "UNLIM", "USED"]


async def test_the_window_boundaries_hold_over_http(served: Served) -> None:
    """Eligible exactly at valid_from; expired exactly at valid_until (exclusive)."""
    coupon_id, me = unique_id("CP"), unique_id("C")
    await put(served, coupon_id, body())
    path = f"/v1/customers/{me}/coupons/{coupon_id}"
    async with client(served, served.read_key) as http:
        at_start = (await http.get(path, params={"at": "2026-11-01T09:00:00+09:00"})).json()
        before = (await http.get(path, params={"at": "2026-10-31T23:59:59.999999Z"})).json()
        at_end = (await http.get(path, params={"at": "2026-12-01T00:00:00Z"})).json()
    assert at_start["eligible"] is True
    assert before["reason"] == "not_started"
    assert at_end["reason"] == "expired"


async def test_without_at_the_answer_is_for_now(served: Served) -> None:
    """`at` defaults to the current time."""
    coupon_id, me = unique_id("CP"), unique_id("C")
    now = datetime.now(UTC)
    await put(
        served,
        coupon_id,
        body(
            valid_from=(now - timedelta(hours=1)).isoformat(),
            valid_until=(now + timedelta(hours=1)).isoformat(),
        ),
    )
    async with client(served, served.read_key) as http:
        answer = await http.get(f"/v1/customers/{me}/coupons")
    listed = answer.json()
    assert coupon_id in [c["coupon_id"] for c in listed["coupons"]]
    assert abs(datetime.fromisoformat(listed["at"]) - now) < timedelta(minutes=5)


@pytest.mark.parametrize(
    "params",
    [
        {"at": "2026-11-15T12:00:00"},
        {"at": "2026-11-15"},
        {"at": "yesterday"},
        {"at": "2026-13-15T12:00:00Z"},
        {"at": "0001-01-01T00:00:00+01:00"},
        {"store_id": "no spaces"},
        {"include_ineligible": "perhaps"},
    ],
)
async def test_invalid_eligibility_parameters_are_422(
    served: Served, params: dict[str, str]
) -> None:
    """`at` must be RFC 3339 with an offset; store ids are identifiers."""
    async with client(served, served.read_key) as http:
        response = await http.get(f"/v1/customers/{unique_id('C')}/coupons", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM


async def test_a_customer_never_seen_has_no_usage_not_a_404(served: Served) -> None:
    """Unknown customers are simply customers with no usage."""
    coupon_id = unique_id("CP")
    await put(served, coupon_id, body(uses_permitted=3))
    async with client(served, served.read_key) as http:
        response = await http.get(
            f"/v1/customers/{unique_id('C')}/coupons/{coupon_id}", params={"at": DURING}
        )
    assert response.status_code == 200
    assert response.json()["uses_made"] == 0
    assert response.json()["uses_remaining"] == 3


async def test_a_coupon_targeted_at_100000_customers_answers_by_index_probe(
    served: Served, db: Database
) -> None:
    """A 100,000-customer coupon is stored, answered correctly, and replaced as a whole."""
    coupon_id, outsider = unique_id("BIG"), unique_id("C")
    customers = [f"{coupon_id}-C{i:06d}" for i in range(100_000)]
    created = await put(served, coupon_id, body(customer_ids=customers))
    assert len(created["customer_ids"]) == 100_000

    member = customers[54_321]
    async with client(served, served.read_key) as http:
        mine = await http.get(f"/v1/customers/{member}/coupons", params={"at": DURING})
        theirs = await http.get(
            f"/v1/customers/{outsider}/coupons",
            params={"at": DURING, "include_ineligible": "true"},
        )
        single = await http.get(
            f"/v1/customers/{outsider}/coupons/{coupon_id}", params={"at": DURING}
        )
        fetched = await http.get(f"/v1/coupons/{coupon_id}")
    assert coupon_id in [c["coupon_id"] for c in mine.json()["coupons"]]
    assert coupon_id not in [c["coupon_id"] for c in theirs.json()["coupons"]]
    assert single.json()["reason"] == "not_targeted"
    assert sorted(fetched.json()["customer_ids"]) == sorted(customers)

    async with db.connection() as conn:
        plan = "\n".join(
            row[0]
            for row in await conn.fetch(
                "EXPLAIN SELECT 1 FROM coupon_targets WHERE coupon_id = $1 AND customer_id = $2",
                coupon_id,
                member,
            )
        )
    assert "Index" in plan
    assert "Seq Scan" not in plan

    replaced = await put(served, coupon_id, body(customer_ids=[outsider, outsider]))
    assert replaced["customer_ids"] == [outsider]
    async with db.connection() as conn:
        count = await conn.fetchval(
            "SELECT count(*) FROM coupon_targets WHERE coupon_id = $1", coupon_id
        )
    assert count == 1


async def test_a_customers_list_never_reads_all_of_coupon_targets(
    served: Served, db: Database
) -> None:
    """Few targets or many, the targeted coupons issued to a customer come from an index."""
    await put(served, unique_id("FEW"), body(customer_ids=[unique_id("C") for _ in range(50)]))
    async with db.connection() as conn:
        await conn.execute("ANALYZE coupon_targets")
        plans = [
            "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {sql}", customers))
            for sql, customers in [
                (queries._CUSTOMER_COUPONS, unique_id("C")),
                (queries._CUSTOMERS_COUPONS, [unique_id("C"), unique_id("C")]),
            ]
        ]
    for plan in plans:
        assert "Seq Scan on coupon_targets" not in plan


@pytest.mark.parametrize(
    ("fast", "by_fastapi"),
    [
        ({"include_ineligible": "true"}, {"include_ineligible": "TRUE"}),
        ({"include_ineligible": "false"}, {"include_ineligible": "no"}),
        ({"store_id": "S0001"}, {"store_id": "repeated"}),
    ],
)
async def test_the_fast_path_answers_exactly_as_fastapi_does(
    served: Served, db: Database, fast: dict[str, str], by_fastapi: dict[str, str]
) -> None:
    """The plain-ASGI hot route and the FastAPI route send the very same bytes."""
    me = unique_id("C")
    used, stores = unique_id("USED"), unique_id("STORE")
    await put(served, used, body(uses_permitted=2))
    await put(served, stores, body(store_ids=["S0001"], uses_permitted=None))
    await put(served, unique_id("EARLY"), body(valid_from="2026-11-20T00:00:00Z"))
    await insert_usage(db, customer_id=me, coupon_id=used, uses_made=2)
    async with client(served, served.read_key) as http:
        path = f"/v1/customers/{me}/coupons"
        # A duplicated parameter is never taken by the fast path, so this one is FastAPI's.
        if by_fastapi.get("store_id") == "repeated":
            at = DURING.replace("+", "%2B")
            slow = await http.get(f"{path}?at={at}&store_id=S0001&store_id=S0001")
        else:
            slow = await http.get(path, params={"at": DURING, **by_fastapi})
        quick = await http.get(path, params={"at": DURING, **fast})
    assert quick.status_code == slow.status_code == 200
    assert quick.headers["content-type"] == slow.headers["content-type"] == "application/json"
    assert quick.content == slow.content


async def test_a_replaced_coupon_is_listed_with_its_new_terms_at_once(served: Served) -> None:
    """The per-process cache of coupon terms never answers with a replaced version."""
    coupon_id, me = unique_id("CP"), unique_id("C")
    path = f"/v1/customers/{me}/coupons"
    await put(served, coupon_id, body())
    async with client(served, served.read_key) as http:
        before = (await http.get(path, params={"at": DURING})).json()["coupons"]
        await put(served, coupon_id, body(name="Coffee 20% off", uses_permitted=5))
        after = (await http.get(path, params={"at": DURING})).json()["coupons"]
        await put(served, coupon_id, body(active=False))
        gone = (await http.get(path, params={"at": DURING})).json()["coupons"]
    mine = [(c["name"], c["uses_permitted"]) for c in before if c["coupon_id"] == coupon_id]
    assert mine == [("Tea 10% off", 1)]
    mine = [(c["name"], c["uses_permitted"]) for c in after if c["coupon_id"] == coupon_id]
    assert mine == [("Coffee 20% off", 5)]
    assert coupon_id not in [c["coupon_id"] for c in gone]


async def test_lists_fetched_together_are_each_the_customers_own(
    served: Served, db: Database
) -> None:
    """Requests at once (lists fetched in shared queries) answer as each alone does."""
    customers = [unique_id("C") for _ in range(12)]
    used, targeted = unique_id("USED"), unique_id("TARGETED")
    await put(served, used, body(uses_permitted=3))
    await put(served, targeted, body(customer_ids=customers[:4]))
    for n, customer_id in enumerate(customers):
        await insert_usage(db, customer_id=customer_id, coupon_id=used, uses_made=n % 4)
    async with client(served, served.read_key) as http:

        async def listed(customer_id: str) -> bytes:
            response = await http.get(
                f"/v1/customers/{customer_id}/coupons",
                params={"at": DURING, "include_ineligible": "true"},
            )
            assert response.status_code == 200
            return response.content

        alone = [await listed(customer_id) for customer_id in customers]
        together = await asyncio.gather(*(listed(c) for c in customers + customers))
    assert list(together) == alone + alone


async def test_one_query_for_many_customers_gives_each_their_own_candidates(
    served: Served, db: Database
) -> None:
    """The batcher's shared query returns what the one-customer query returns, per customer."""
    customers = [unique_id("C") for _ in range(10)]
    used, targeted, withdrawn = unique_id("USED"), unique_id("TARGETED"), unique_id("GONE")
    await put(served, used, body(uses_permitted=None))
    await put(served, targeted, body(customer_ids=customers[::3]))
    await put(served, withdrawn, body(uses_permitted=None))
    for n, customer_id in enumerate(customers):
        await insert_usage(db, customer_id=customer_id, coupon_id=used, uses_made=n)
        await insert_usage(db, customer_id=customer_id, coupon_id=withdrawn, uses_made=1)
    async with client(served, served.admin_key) as http:
        assert (await http.delete(f"/v1/coupons/{withdrawn}")).status_code == 200
    batcher = CouponListBatcher(db)
    asked = [*customers, customers[0], unique_id("NEVER-SEEN")]
    together = await asyncio.gather(*(batcher.fetch(c) for c in asked))
    async with db.connection() as conn:
        alone = [await queries.fetch_customer_coupons(conn, c) for c in asked]
    assert list(together) == alone
    assert any(terms.coupon_id == targeted for terms, *_ in together[0])
    assert not any(terms.coupon_id == targeted for terms, *_ in together[1])
    assert not any(terms.coupon_id == withdrawn for listed in together for terms, *_ in listed)


class _TimedDatabase(Database):
    """The real pool, noting when each connection is taken: one per list query."""

    def __init__(self, db: Database) -> None:
        super().__init__(db.pool)
        self.taken: list[float] = []

    def connection(self) -> Any:
        """The pool's connection, its time noted."""
        self.taken.append(time.monotonic())
        return super().connection()


async def test_list_queries_start_at_least_the_interval_apart_and_share_the_wait(
    db: Database,
) -> None:
    """Lists asked for just after a query started wait for the interval, then go as one query."""

    class Spaced(CouponListBatcher):
        MIN_QUERY_INTERVAL = 0.2

    reads = _TimedDatabase(db)
    batcher = Spaced(reads)
    first, *others = [unique_id("C") for _ in range(4)]
    await batcher.fetch(first)
    await asyncio.gather(*(batcher.fetch(c) for c in others))
    taken = reads.taken
    assert len(taken) == 2
    assert taken[1] - taken[0] >= Spaced.MIN_QUERY_INTERVAL * 0.95
