"""Keys, scopes, problem documents and the operational endpoints, over real HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from typing import Any

import pytest
from punchcard_coupon_query.apikeys import (
    KEY_CACHE_SECONDS,
    KEY_QUERIES_PER_SECOND,
    ApiKeyCache,
    create_api_key,
    list_api_keys,
    revoke_api_key,
)
from punchcard_coupon_query.openapi import openapi_document
from punchcard_devstack import Endpoints
from punchcard_platform.db import Database

from tests.helpers import eventually, unique_id
from tests.integration.query.support import Served, client, serve_in_loop

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


async def test_a_call_without_a_key_is_401_with_a_problem_document(served: Served) -> None:
    """No Authorization header: 401, WWW-Authenticate: Bearer, RFC 9457 body."""
    async with client(served, None) as http:
        response = await http.get(f"/v1/customers/{unique_id('C')}/coupons")
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert body["status"] == 401
    assert body["title"] == "Unauthorized"


@pytest.mark.parametrize(
    "key",
    [
        "pc_0123456789abcdef_" + "A" * 43,
        "not-a-key",
        "pc_",
    ],
)
async def test_a_wrong_key_is_401(served: Served, key: str) -> None:
    """An unknown, malformed or empty key is refused like a missing one."""
    async with client(served, None) as http:
        response = await http.get("/v1/coupons", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM


async def test_a_real_key_id_with_a_wrong_secret_is_401(served: Served) -> None:
    """The hash of the whole key must match, not just its id."""
    forged = served.read_key[:-4] + ("AAAA" if not served.read_key.endswith("AAAA") else "BBBB")
    async with client(served, forged) as http:
        response = await http.get("/v1/coupons")
    assert response.status_code == 401


async def test_a_non_bearer_scheme_is_401(served: Served) -> None:
    """Basic credentials are not an API key."""
    async with client(served, None) as http:
        response = await http.get("/v1/coupons", headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert response.status_code == 401


async def test_a_revoked_key_stops_working_within_the_key_cache_time(
    served: Served, db: Database
) -> None:
    """Revocation needs no restart: within KEY_CACHE_SECONDS every route refuses the key."""
    key_id, key = await create_api_key(db, "read", "to revoke")
    hot = f"/v1/customers/{unique_id('C')}/coupons"
    async with client(served, key) as http:
        assert (await http.get("/v1/coupons")).status_code == 200
        assert (await http.get(hot)).status_code == 200
        assert await revoke_api_key(db, key_id)

        async def refused() -> bool:
            statuses = {(await http.get(path)).status_code for path in ("/v1/coupons", hot)}
            return statuses == {401}

        await eventually(refused, timeout=KEY_CACHE_SECONDS + 1, what="revoked key refused")
    assert not await revoke_api_key(db, key_id)


async def test_a_known_key_is_checked_again_once_its_cache_entry_expires(
    stack: Endpoints, db: Database
) -> None:
    """Until its last second the key is served from the cache; after expiry the revocation shows."""
    now = [1000.0]
    keys = ApiKeyCache(db, clock=lambda: now[0], refresh_ahead=1.0)
    key_id, key = await create_api_key(db, "read", "cached")
    hot = f"/v1/customers/{unique_id('C')}/coupons"
    async with (
        serve_in_loop(stack.database_url, db, keys=keys) as served,
        client(served, key) as http,
    ):
        assert (await http.get(hot)).status_code == 200
        assert await revoke_api_key(db, key_id)
        now[0] += KEY_CACHE_SECONDS - 1.5
        assert (await http.get(hot)).status_code == 200
        assert (await http.get("/v1/coupons")).status_code == 200
        now[0] += 2.0
        assert (await http.get(hot)).status_code == 401
        assert (await http.get("/v1/coupons")).status_code == 401


class CountingDatabase(Database):
    """The real pool, counting the connections taken from it: one per key query."""

    def __init__(self, db: Database) -> None:
        super().__init__(db.pool)
        self.taken = 0

    def connection(self) -> Any:
        """The pool's connection, counted."""
        self.taken += 1
        return super().connection()


def made_up_key() -> str:
    """A well-formed key that no one created."""
    return f"pc_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"


async def test_requests_missing_the_same_key_together_share_one_query(db: Database) -> None:
    """Twenty requests asking at once for a key not in the cache cost one query."""
    counting = CountingDatabase(db)
    keys = ApiKeyCache(counting)
    key_id, key = await create_api_key(db, "read", "asked together")
    callers = await asyncio.gather(*(keys.authenticate(key) for _ in range(20)))
    assert {caller.key_id if caller else None for caller in callers} == {key_id}
    assert counting.taken == 1


async def test_a_key_in_use_is_checked_again_before_its_entry_expires(db: Database) -> None:
    """A use in the last second asks again once, in the background; a revocation shows early."""
    now = [1000.0]
    counting = CountingDatabase(db)
    keys = ApiKeyCache(counting, clock=lambda: now[0], refresh_ahead=1.0)
    key_id, key = await create_api_key(db, "read", "in use")
    assert await keys.authenticate(key) is not None
    assert await revoke_api_key(db, key_id)
    now[0] += KEY_CACHE_SECONDS - 0.5
    for _ in range(10):  # still answered from the entry, and asked for again only once
        known, caller = keys.lookup(key)
        assert known
        assert caller is not None

    async def refused() -> bool:
        return keys.lookup(key) == (True, None)

    await eventually(refused, timeout=5, what="the revocation seen before the entry expired")
    assert counting.taken == 2


async def test_made_up_keys_cost_bounded_queries_and_never_evict_a_real_key(db: Database) -> None:
    """20,000 made-up keys: at most one second's key queries; the real key stays cached."""
    now = [1000.0]
    counting = CountingDatabase(db)
    keys = ApiKeyCache(counting, clock=lambda: now[0])
    key_id, key = await create_api_key(db, "read", "real")
    assert await keys.authenticate(key) is not None
    refused = await asyncio.gather(*(keys.authenticate(made_up_key()) for _ in range(20_000)))
    assert set(refused) == {None}
    assert counting.taken <= 1 + KEY_QUERIES_PER_SECOND
    before = counting.taken
    for _ in range(100):
        known, caller = keys.lookup(key)
        assert known
        assert caller is not None
        assert caller.key_id == key_id
        assert await keys.authenticate(key) == caller
    assert counting.taken == before


async def test_a_new_real_key_works_once_the_key_query_rate_allows_it(db: Database) -> None:
    """Over the rate a key is refused without being remembered; a moment later it works."""
    now = [1000.0]
    counting = CountingDatabase(db)
    keys = ApiKeyCache(counting, clock=lambda: now[0], max_queries_per_second=5)
    await asyncio.gather(*(keys.authenticate(made_up_key()) for _ in range(50)))
    assert counting.taken == 5
    key_id, key = await create_api_key(db, "read", "new")
    assert await keys.authenticate(key) is None
    assert counting.taken == 5
    now[0] += 1.0
    caller = await keys.authenticate(key)
    assert caller is not None
    assert caller.key_id == key_id


async def test_a_made_up_key_asked_again_is_answered_from_its_own_cache(db: Database) -> None:
    """A refused key costs one query; its retries until the entry expires cost none."""
    now = [1000.0]
    counting = CountingDatabase(db)
    keys = ApiKeyCache(counting, clock=lambda: now[0])
    bad = made_up_key()
    for _ in range(10):
        assert await keys.authenticate(bad) is None
        assert keys.lookup(bad) == (True, None)
    assert counting.taken == 1
    now[0] += KEY_CACHE_SECONDS
    assert await keys.authenticate(bad) is None
    assert counting.taken == 2


async def test_made_up_keys_over_http_leave_real_key_requests_served(
    stack: Endpoints, db: Database
) -> None:
    """Hot-route requests with 2,000 made-up keys are 401; the real key's are 200 throughout."""
    counting = CountingDatabase(db)
    keys = ApiKeyCache(counting)
    me = f"/v1/customers/{unique_id('C')}/coupons"
    async with serve_in_loop(stack.database_url, db, keys=keys) as served:
        started = time.monotonic()
        async with client(served, served.read_key) as real, client(served, None) as other:
            assert (await real.get(me)).status_code == 200
            for _ in range(20):
                statuses = await asyncio.gather(
                    *(
                        other.get(me, headers={"Authorization": f"Bearer {made_up_key()}"})
                        for _ in range(100)
                    )
                )
                assert {response.status_code for response in statuses} == {401}
                assert (await real.get(me)).status_code == 200
        elapsed = time.monotonic() - started
    # The served keys (read, admin) and a refill of the rate per second elapsed, at most.
    assert counting.taken <= 2 + KEY_QUERIES_PER_SECOND * (1 + elapsed)


async def test_a_read_key_may_read_but_not_manage_coupons(served: Served) -> None:
    """Admin calls with a read key are 403; reads are fine."""
    coupon_id = unique_id("CP")
    async with client(served, served.read_key) as http:
        assert (await http.get("/v1/coupons")).status_code == 200
        put = await http.put(f"/v1/coupons/{coupon_id}", json={"name": "x"})
        delete = await http.delete(f"/v1/coupons/{coupon_id}")
    for response in (put, delete):
        assert response.status_code == 403
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["status"] == 403


async def test_keys_are_stored_only_as_sha256(db: Database) -> None:
    """The database holds the hash of the key and nothing from which to rebuild it."""
    name = unique_id("key")
    key_id, key = await create_api_key(db, "admin", name)
    assert key.startswith(f"pc_{key_id}_")
    async with db.connection() as conn:
        row = await conn.fetchrow("SELECT * FROM api_keys WHERE key_id = $1", key_id)
    assert row is not None
    assert row["key_hash"] == hashlib.sha256(key.encode()).digest()
    assert key.split("_", 2)[2] not in {str(v) for v in dict(row).values()}
    listed = [k for k in await list_api_keys(db) if k.key_id == key_id]
    assert [(k.name, k.scope, k.revoked_at) for k in listed] == [(name, "admin", None)]


async def test_an_unknown_scope_is_refused(db: Database) -> None:
    """Only read and admin exist."""
    with pytest.raises(ValueError, match="scope"):
        await create_api_key(db, "superuser", "nope")


async def test_health_readiness_and_metrics_need_no_key(served: Served) -> None:
    """Orchestrators and Prometheus call these without credentials."""
    async with client(served, None) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        assert (await http.get("/readyz")).json() == {"status": "ready"}
        await http.get(f"/v1/customers/{unique_id('C')}/points")
        metrics = await http.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert (
        'punchcard_coupon_query_http_requests_total{method="GET",'
        'route="/v1/customers/{customer_id}/points",status="401"}'
    ) in text
    assert "punchcard_coupon_query_http_request_duration_seconds_bucket" in text
    assert 'route="/healthz",status="200"' in text


async def test_an_unknown_path_is_a_404_problem(served: Served) -> None:
    """Even routing errors are problem documents."""
    async with client(served, served.read_key) as http:
        response = await http.get("/v2/nothing")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM


async def test_the_served_openapi_document_matches_the_exported_one(served: Served) -> None:
    """What /openapi.json serves is the committed services/coupon-query/openapi.json."""
    async with client(served, None) as http:
        response = await http.get("/openapi.json")
    assert response.status_code == 200
    assert response.json() == openapi_document()
