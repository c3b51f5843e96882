"""The web console in a real browser (Debian's Chromium through Playwright), over the real
services, broker and database: what the service desk, marketing and operators do with it.

Every page visited is checked with axe-core (no serious or critical violation) and
photographed; set ``PUNCHCARD_CONSOLE_SCREENSHOTS=docs/console`` to refresh the pictures
of docs/console.md. Without Chromium these tests fail: `apt-get install chromium`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, FilePayload, Page, ViewportSize, async_playwright
from punchcard_coupon_query.apikeys import create_api_key
from punchcard_platform.db import Database
from punchcard_platform.settings import Settings

from tests.documents import encode, receipt_document, return_document
from tests.e2e.conftest import StartService
from tests.helpers import eventually, produce, unique_id

CHROMIUM = Path("/usr/bin/chromium")
# No sandbox (tests may run as root), and nothing that reaches out to the internet.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# axe-core as the PyPI package axe-playwright-python ships it (no npm, no download).
AXE_SCRIPT = resources.files("axe_playwright_python") / "axe.min.js"
LAPTOP = ViewportSize(width=1280, height=860)
TABLET = ViewportSize(width=768, height=1024)


def _chromium_installed() -> bool:
    return CHROMIUM.exists()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless; a missing browser fails the test, it never skips it."""
    assert _chromium_installed(), "these tests need Chromium: apt-get install chromium"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where the pages' pictures go: docs/console when asked, else this test's folder."""
    wanted = os.environ.get("PUNCHCARD_CONSOLE_SCREENSHOTS")
    folder = Path(wanted) if wanted else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def _new_page(browser: Browser) -> Page:
    # axe-core is injected as a script, which the console's own CSP rightly forbids.
    context = await browser.new_context(viewport=LAPTOP, bypass_csp=True)
    return await context.new_page()


async def look(page: Page, shots: Path, name: str) -> None:
    """Check the page with axe-core and photograph it."""
    await page.add_script_tag(path=str(AXE_SCRIPT))
    result: dict[str, Any] = await page.evaluate(
        "async () => await axe.run(document, {resultTypes: ['violations']})"
    )
    serious = [
        (v["id"], v["help"], [n["target"] for n in v["nodes"]][:3])
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert not serious, f"{name}: {serious}"
    await page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


async def sign_in(page: Page, base: str, key: str) -> None:
    """Sign in from the sign-in page the browser is on, or open it first."""
    if "/console/" not in page.url or await page.locator("#api_key").count() == 0:
        await page.goto(f"{base}/console/")
    await page.fill("#api_key", key)
    await page.click("button:has-text('Sign in')")
    await page.wait_for_load_state()


async def _put_coupon(http: httpx.AsyncClient, coupon_id: str, **body: Any) -> None:
    answer = await http.put(f"/v1/coupons/{coupon_id}", json=body)
    assert answer.status_code in (200, 201), answer.text


async def test_the_service_desk_finds_a_customer_fed_through_kafka_with_balance_and_reasons(
    settings: Settings, db: Database, start_service: StartService, browser: Browser, shots: Path
) -> None:
    """Sign in from a link, see the balance, the coupons and why not, receipts and returns."""
    start_service("receipt-consumer")
    start_service("returns")
    api = start_service("coupon-query")
    _, admin_key = await create_api_key(db, "admin", "console e2e")
    _, read_key = await create_api_key(db, "read", "console e2e desk")
    customer = unique_id("C")
    tea, bread, later = unique_id("TEA"), unique_id("BREAD"), unique_id("XMAS")
    starts = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    admin = {"Authorization": f"Bearer {admin_key}"}
    async with httpx.AsyncClient(base_url=api.url, headers=admin) as http:
        await _put_coupon(http, tea, name="Tea 10% off", uses_permitted=3)
        await _put_coupon(http, bread, name="Bread 50 yen off", uses_permitted=5)
        await _put_coupon(http, later, name="Christmas cake", valid_from=starts.isoformat())
        tea_sale = receipt_document(customer, coupons=[(tea, 3)], points_earned=19)
        bread_sale = receipt_document(
            customer,
            coupons=[(bread, 1)],
            points_used=5,
            points_earned=10,
            occurred_at="2026-11-23T18:02:11+09:00",
        )
        await produce(
            settings,
            settings.topics.receipts,
            [(customer.encode(), encode(tea_sale)), (customer.encode(), encode(bread_sale))],
        )
        returned = bread_sale["transaction_no"]
        for _ in range(2):  # the second return of the same sale is refused
            await produce(
                settings,
                settings.topics.returns,
                [(returned.encode(), encode(return_document(returned)))],
            )
            await asyncio.sleep(0)

        async def refused_twice() -> bool:
            async with db.connection() as conn:
                decided = await conn.fetchval(
                    "SELECT count(*) FROM return_events WHERE transaction_no = $1 "
                    "AND status <> 'pending'",
                    returned,
                )
            return bool(decided == 2)

        await eventually(refused_twice, what="both returns decided")

    page = await _new_page(browser)
    await page.goto(f"{api.url}/console/customers/{customer}")
    assert "next=" in page.url
    await look(page, shots, "sign-in")
    await sign_in(page, api.url, read_key)
    assert page.url == f"{api.url}/console/customers/{customer}"

    assert await page.inner_text("[data-testid=balance]") == "19"
    usable = await page.inner_text("table:has(caption:has-text('Usable now'))")
    assert bread in usable
    assert tea not in usable
    await page.click("text=Show the coupons they cannot use")
    not_usable = page.locator("table:has(caption:has-text('not usable now'))")
    assert "used 3 of 3 times" in await not_usable.locator(f"tr:has-text('{tea}')").inner_text()
    assert f"starts {starts.day} {starts:%b %Y}" in await not_usable.inner_text()
    returns = await page.inner_text("#returns-heading + table")
    assert "refused" in returns
    assert "this sale was returned before" in returns
    await look(page, shots, "customer")
    await page.set_viewport_size(TABLET)
    await look(page, shots, "customer-tablet")
    await page.set_viewport_size(LAPTOP)

    await page.click(f"#receipts-heading + table a:has-text('{returned}')")
    assert page.url == f"{api.url}/console/receipts/{returned}"
    assert "Green tea 500ml" in await page.inner_text("main")
    assert f'"transaction_no": "{returned}"' in await page.inner_text("pre.raw")
    assert "accepted" in await page.inner_text("#returns-heading + table")
    await look(page, shots, "receipt")

    await page.goto(f"{api.url}/console/")
    await page.fill("#customer_id", customer)
    await page.click("text=Open customer")
    assert page.url == f"{api.url}/console/customers/{customer}"
    await page.goto(f"{api.url}/console/")
    await look(page, shots, "search")


async def test_marketing_targets_a_coupon_from_a_csv_and_only_those_customers_see_it(
    db: Database, start_service: StartService, browser: Browser, shots: Path
) -> None:
    """Create with validation next to the fields, target by CSV, check two customers, deactivate."""
    api = start_service("coupon-query")
    _, admin_key = await create_api_key(db, "admin", "console e2e marketing")
    coupon = unique_id("XMAS")
    targeted, other = unique_id("C"), unique_id("C")
    page = await _new_page(browser)
    await page.goto(f"{api.url}/console/coupons/new")
    await sign_in(page, api.url, admin_key)
    assert page.url == f"{api.url}/console/coupons/new"

    await page.fill("#coupon_id", coupon)
    await page.fill("#name", "Christmas: 300 yen off")
    await page.fill("#uses_permitted", "0")
    await page.fill("#valid_from", "2026-12-01T00:00:00+09:00")
    await page.fill("#valid_until", "2026-11-01T00:00:00+09:00")
    await page.check("#targeting-csv")
    await page.click("text=Create coupon")
    assert "greater than or equal to 1" in await page.inner_text("#uses_permitted-errors")
    assert "choose a CSV file" in await page.inner_text("#targeting-errors")
    await look(page, shots, "coupon-form")

    csv = FilePayload(
        name="christmas.csv",
        mimeType="text/csv",
        buffer=f"customer_id\n{targeted}\nC-also-1\n{targeted}\n".encode(),
    )
    await page.fill("#uses_permitted", "1")
    await page.set_input_files("#customer_csv", files=[csv])
    await page.click("text=Create coupon")
    assert "later than valid_from" in await page.inner_text("#valid_until-errors")

    await page.fill("#valid_until", "2027-01-01T00:00:00+09:00")
    await page.set_input_files("#customer_csv", files=[csv])
    await page.click("text=Create coupon")
    assert page.url == f"{api.url}/console/coupons/{coupon}?saved=1"
    assert await page.inner_text("[data-testid=targets]") == "2 customers"
    await look(page, shots, "coupon")

    await page.goto(f"{api.url}/console/customers/{targeted}?at=now")
    assert coupon in await page.inner_text("#coupons-heading ~ table")
    await page.goto(f"{api.url}/console/customers/{other}?ineligible=true")
    assert coupon not in await page.inner_text("main")

    await page.goto(f"{api.url}/console/coupons?targeted=yes&validity=current")
    assert coupon in await page.inner_text("main table")
    await page.goto(f"{api.url}/console/coupons?targeted=no")
    assert coupon not in await page.inner_text("main")
    await page.goto(f"{api.url}/console/coupons")
    await look(page, shots, "coupons")

    await page.goto(f"{api.url}/console/coupons/{coupon}")
    await page.click("text=Deactivate…")
    await look(page, shots, "deactivate")
    await page.click(f"button:has-text('Deactivate {coupon}')")
    assert "deactivated" in await page.inner_text("main dl")
    await page.goto(f"{api.url}/console/customers/{targeted}")
    assert coupon not in await page.inner_text("main")


async def test_a_read_key_sees_the_coupons_but_is_offered_no_change(
    db: Database, start_service: StartService, browser: Browser, shots: Path
) -> None:
    """No edit form, no new-coupon page: a read key changes nothing."""
    api = start_service("coupon-query")
    _, admin_key = await create_api_key(db, "admin", "console e2e")
    _, read_key = await create_api_key(db, "read", "console e2e read")
    coupon = unique_id("TEA")
    async with httpx.AsyncClient(
        base_url=api.url, headers={"Authorization": f"Bearer {admin_key}"}
    ) as http:
        await _put_coupon(http, coupon, name="Tea 10% off")
    page = await _new_page(browser)
    await page.goto(f"{api.url}/console/coupons/{coupon}")
    await sign_in(page, api.url, read_key)
    assert "Tea 10% off" in await page.inner_text("main")
    assert await page.locator("text=Save changes").count() == 0
    assert await page.locator("text=Deactivate…").count() == 0
    answer = await page.goto(f"{api.url}/console/coupons/new")
    assert answer is not None
    assert answer.status == 403
    assert "scope 'read'" in await page.inner_text("main")
    await look(page, shots, "read-key-refused")


async def test_an_operator_reads_a_dead_letter_and_replays_it_with_the_command(
    settings: Settings, db: Database, start_service: StartService, browser: Browser, shots: Path
) -> None:
    """The dead letter is listed by reason, shown with its bytes, and replayed by `dlq replay`."""
    start_service("receipt-consumer")
    api = start_service("coupon-query")
    _, read_key = await create_api_key(db, "read", "console e2e operator")
    document = receipt_document(unique_id("C"), schema_version=2)
    await produce(settings, settings.topics.receipts, [(b"C-dead", encode(document))])

    async def letter_id() -> int | None:
        async with db.connection() as conn:
            found: int | None = await conn.fetchval(
                "SELECT id FROM dead_letters WHERE topic = $1 ORDER BY id LIMIT 1",
                settings.topics.receipts,
            )
        return found

    letter = await eventually(letter_id, what="the dead letter recorded")
    page = await _new_page(browser)
    await page.goto(f"{api.url}/console/dead-letters?reason=unsupported_schema_version")
    await sign_in(page, api.url, read_key)
    await page.click(f"a[href='/console/dead-letters/{letter}']")
    assert page.url == f"{api.url}/console/dead-letters/{letter}"
    shown = await page.inner_text("[data-testid=bytes]")
    assert '"schema_version": 2' in shown
    assert f'"transaction_no": "{document["transaction_no"]}"' in shown
    assert f"punchcard dlq replay --id {letter}" in await page.inner_text("pre.command")
    await look(page, shots, "dead-letter")

    replay = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "punchcard", "dlq", "replay", "--id", str(letter)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **settings.environment(), "PUNCHCARD_LOG_LEVEL": "WARNING"},
        check=False,
    )
    assert replay.returncode == 0, replay.stderr
    assert "1 dead letter(s) replayed" in replay.stdout
    await page.reload()
    assert "not yet" not in await page.inner_text("main dl")

    async def dead_again() -> bool:
        async with db.connection() as conn:
            count = await conn.fetchval(
                "SELECT count(*) FROM dead_letters WHERE topic = $1", settings.topics.receipts
            )
        return bool(count == 2)

    await eventually(dead_again, what="the replayed record dead-lettered again, once")
    await page.goto(f"{api.url}/console/dead-letters")
    await look(page, shots, "dead-letters")
