"""The console's sign-in over HTTP: cookie, redirects, cross-site forms, revocation, scopes."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import httpx
from punchcard_coupon_query.apikeys import ApiKeyCache, create_api_key, revoke_api_key
from punchcard_coupon_query.app import create_app
from punchcard_devstack import Endpoints
from punchcard_platform.db import Database
from punchcard_platform.settings import Settings

from tests.helpers import eventually, unique_id
from tests.integration.query.support import Served, serve_in_loop


def _client(served: Served) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=served.base_url, follow_redirects=False, timeout=10)


async def _signed_in(http: httpx.AsyncClient, key: str) -> str:
    """Sign in; returns the form token of the session."""
    answer = await http.post("/console/sign-in", data={"api_key": key, "next": "/console/"})
    assert answer.status_code == 303, answer.text
    page = await http.get("/console/")
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
    assert found is not None, page.text
    return found.group(1)


async def test_a_signed_out_visit_asks_for_the_key_and_then_lands_where_it_was_going(
    served: Served,
) -> None:
    """The address survives the sign-in; the session cookie is HttpOnly and SameSite=Strict."""
    async with _client(served) as http:
        bare = await http.get("/console")
        assert bare.headers["location"].endswith("/console/")
        visit = await http.get("/console/customers/C-42?ineligible=true")
        assert visit.status_code == 303
        assert visit.headers["location"] == (
            "/console/?next=%2Fconsole%2Fcustomers%2FC-42%3Fineligible%3Dtrue"
        )
        form = await http.get(visit.headers["location"])
        assert 'value="/console/customers/C-42?ineligible=true"' in form.text
        assert served.read_key not in form.text

        signed_in = await http.post(
            "/console/sign-in",
            data={"api_key": served.read_key, "next": "/console/customers/C-42?ineligible=true"},
        )
        assert signed_in.status_code == 303
        assert signed_in.headers["location"] == "/console/customers/C-42?ineligible=true"
        cookie = signed_in.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert "path=/console" in cookie
        assert "secure" not in cookie
        assert "max-age" not in cookie  # a session cookie: gone when the browser closes

        for nowhere in ("/console/dead-letters/x", "/console/customers/not%20an%20id"):
            missing = await http.get(nowhere)
            assert missing.status_code == 404
            assert missing.headers["content-type"].startswith("text/html")
        page = await http.get("/console/customers/C-42?ineligible=true")
        assert page.status_code == 200
        assert 'Customer <span class="id">C-42</span>' in page.text
        assert served.read_key not in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]


async def test_a_wrong_key_is_refused_and_another_site_is_never_the_next_address(
    served: Served,
) -> None:
    """A bad key stays on the sign-in page; ``next`` pointing elsewhere goes home instead."""
    async with _client(served) as http:
        wrong = await http.post("/console/sign-in", data={"api_key": "pc_nope", "next": ""})
        assert wrong.status_code == 401
        assert "unknown or was revoked" in wrong.text
        for elsewhere in ("//evil.example/x", "https://evil.example/", "/console/\\evil"):
            answer = await http.post(
                "/console/sign-in", data={"api_key": served.read_key, "next": elsewhere}
            )
            assert answer.headers["location"] == "/console/"


async def test_the_cookie_is_secure_when_the_console_is_served_over_tls(
    stack: Endpoints, db: Database
) -> None:
    """Behind TLS the browser must never send the key in clear."""
    _, key = await create_api_key(db, "read", "console tls")
    app = create_app(Settings(database_url=stack.database_url), db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://console.test") as http:
        answer = await http.post("/console/sign-in", data={"api_key": key, "next": "/console/"})
    assert answer.status_code == 303
    assert "secure" in answer.headers["set-cookie"].lower()


async def test_a_form_without_its_token_or_from_another_site_changes_nothing(
    served: Served, db: Database
) -> None:
    """Deactivating needs the session's token and this site's origin."""
    coupon = unique_id("CPN")
    async with _client(served) as http:
        await http.put(
            f"/v1/coupons/{coupon}", json={"name": "Kept"}, headers=served.headers(served.admin_key)
        )
        token = await _signed_in(http, served.admin_key)
        address = f"/console/coupons/{coupon}/deactivate"
        missing = await http.post(address, data={})
        forged = await http.post(address, data={"csrf_token": "0" * 64})
        elsewhere = await http.post(
            address, data={"csrf_token": token}, headers={"Origin": "https://evil.example"}
        )
        assert [r.status_code for r in (missing, forged, elsewhere)] == [403, 403, 403]
        still = await http.get(f"/v1/coupons/{coupon}", headers=served.headers(served.read_key))
        assert still.json()["active"] is True

        done = await http.post(address, data={"csrf_token": token})
        assert done.status_code == 303
        gone = await http.get(f"/v1/coupons/{coupon}", headers=served.headers(served.read_key))
        assert gone.json()["active"] is False


async def test_a_read_key_sees_coupons_but_cannot_change_them(served: Served) -> None:
    """No form for a read key, and its posts are refused even with a valid token."""
    coupon = unique_id("CPN")
    async with _client(served) as http:
        await http.put(
            f"/v1/coupons/{coupon}", json={"name": "Look"}, headers=served.headers(served.admin_key)
        )
        token = await _signed_in(http, served.read_key)
        page = await http.get(f"/console/coupons/{coupon}")
        assert page.status_code == 200
        assert "Save changes" not in page.text
        assert (await http.get("/console/coupons/new")).status_code == 403
        posted = await http.post(
            f"/console/coupons/{coupon}", data={"csrf_token": token, "name": "Changed"}
        )
        assert posted.status_code == 403
        stored = await http.get(f"/v1/coupons/{coupon}", headers=served.headers(served.read_key))
        assert stored.json()["name"] == "Look"


async def test_a_revoked_key_stops_working_within_the_key_caches_delay(
    stack: Endpoints, db: Database
) -> None:
    """The console asks the API's key cache, so revocation reaches it as fast as the API."""
    keys = ApiKeyCache(db, ttl=0.3, refresh_ahead=0.1)
    async with serve_in_loop(stack.database_url, db, keys=keys) as served, _client(served) as http:
        key_id, key = await create_api_key(db, "read", "console revoke")
        await _signed_in(http, key)
        assert (await http.get("/console/coupons")).status_code == 200
        await revoke_api_key(db, key_id)

        async def refused() -> bool:
            return (await http.get("/console/coupons")).status_code == 303

        started = datetime.now(UTC)
        await eventually(refused, timeout=5, what="the revoked key refused")
        assert (datetime.now(UTC) - started).total_seconds() < 2


async def test_a_coupon_for_a_hundred_thousand_customers_is_made_from_one_csv(
    served: Served,
) -> None:
    """The largest list the API takes goes through the console's upload, counted on the page."""
    coupon = unique_id("BIG")
    ids = [f"{coupon}-C{i}" for i in range(100_000)]
    csv = ("customer_id\n" + "\n".join(ids) + "\n").encode()
    async with _client(served) as http:
        token = await _signed_in(http, served.admin_key)
        created = await http.post(
            "/console/coupons/new",
            data={
                "csrf_token": token,
                "coupon_id": coupon,
                "name": "Everyone on the list",
                "targeting": "csv",
                "active": "on",
                "restore_on_return": "on",
            },
            files={"customer_csv": ("list.csv", csv, "text/csv")},
            timeout=60,
        )
        assert created.status_code == 303, created.text
        page = await http.get(f"/console/coupons/{coupon}")
        assert '<dd data-testid="targets">100,000 customers</dd>' in page.text
        listed = await http.get(
            f"/v1/customers/{ids[-1]}/coupons", headers=served.headers(served.read_key)
        )
        assert coupon in {c["coupon_id"] for c in listed.json()["coupons"]}
