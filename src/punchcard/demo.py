"""``make run``: the whole system on this machine, shown at work, until Ctrl-C.

Starts Kafka and PostgreSQL (punchcard_devstack), migrates, creates the topics, starts
the three services as processes, loads sample coupons through the admin API, runs the
POS fleet simulator for a short while and prints what a person wants to see. Then it
keeps everything running until Ctrl-C and stops it all cleanly.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from punchcard_coupon_query.apikeys import create_api_key
from punchcard_devstack import DevStack, DevStackError, Endpoints, ServiceProcess
from punchcard_devstack.processes import free_port
from punchcard_platform.db import Database
from punchcard_platform.kafka import create_topics, make_consumer, make_producer
from punchcard_platform.logging import configure_logging
from punchcard_platform.migrations import apply_migrations
from punchcard_platform.settings import Settings

from punchcard.checkout import Checkout
from punchcard.simulator import SimulationOptions, simulate

__all__ = ["main"]

SERVICES = ("receipt-consumer", "returns", "coupon-query")
QUERY_PORT = 8080

POINTS_LIFETIME = "P1D"
"""The demo program's lifetime: the fleet's freshest points expire a day after their sale."""
LIMITED_TIME = "PT5M"
"""A tenth of the member sales earn campaign points that last this long: the older ones
expire as they land, the newest while the demo runs."""
EXPIRY_CHECK_SECONDS = 5.0

SAMPLE_COUPONS: dict[str, dict[str, Any]] = {
    "TEA-10OFF": {"name": "Green tea 10% off", "description": "Any 500ml tea", "uses_permitted": 3},
    "COFFEE-2X": {"name": "Double points on coffee", "uses_permitted": 5},
    "BAKERY-5OFF": {
        "name": "Bakery ¥50 off",
        "uses_permitted": 2,
        "valid_until": "2030-01-01T00:00:00+09:00",
    },
    "WELCOME": {"name": "Welcome gift", "uses_permitted": 1},
}


def say(text: str = "") -> None:
    """Progress for the person at the terminal."""
    print(text, flush=True)


async def _prepare(settings: Settings) -> None:
    db = await Database.connect(settings.database_url, max_size=2)
    try:
        await apply_migrations(db)
    finally:
        await db.close()
    await create_topics(settings, settings.topics.all())


def _start_services(settings: Settings, logs: Path) -> dict[str, ServiceProcess]:
    env = {**settings.environment(), "PUNCHCARD_LOG_FORMAT": "json"}
    ports = {"coupon-query": _query_port(), "receipt-consumer": free_port(), "returns": free_port()}
    services = {
        name: ServiceProcess(name, env=env, port=ports[name], log_file=logs / f"{name}.log")
        for name in SERVICES
    }
    for service in services.values():
        service.start()
    for service in services.values():
        service.wait_healthy()
        say(
            f"  {service.name:<17} pid {service.pid}, {service.url}/healthz, log {service.log_file}"
        )
    return services


def _query_port() -> int:
    # The contract's default port when it is free, so the printed curl lines are familiar.
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", QUERY_PORT))
        except OSError:
            return free_port()
    return QUERY_PORT


async def _count(db: Database, sql: str, *args: object) -> int:
    async with db.connection() as conn:
        return int(await conn.fetchval(sql, *args))


async def _wait_for(
    db: Database, sql: str, target: int, *args: object, timeout: float = 120.0
) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    value = await _count(db, sql, *args)
    while value < target and loop.time() < deadline:
        await asyncio.sleep(0.2)
        value = await _count(db, sql, *args)
    return value


def _curl(url: str, key_name: str) -> str:
    return f"curl -s -H \"Authorization: Bearer ${key_name}\" '{url}'"


async def _show(settings: Settings, query_url: str, db: Database) -> None:
    _, admin_key = await create_api_key(db, "admin", "make run")
    _, read_key = await create_api_key(db, "read", "make run")
    admin = {"Authorization": f"Bearer {admin_key}"}
    read = {"Authorization": f"Bearer {read_key}"}
    async with httpx.AsyncClient(base_url=query_url, timeout=10) as http:
        for coupon_id, body in SAMPLE_COUPONS.items():
            response = await http.put(f"/v1/coupons/{coupon_id}", json=body, headers=admin)
            response.raise_for_status()
        say(f"loaded {len(SAMPLE_COUPONS)} sample coupons through PUT /v1/coupons/{{id}}")

        say(
            "\nrunning the POS fleet simulator (confluent-kafka, zstd) for 3,000 receipts; "
            f"points expire {POINTS_LIFETIME} after the sale, limited-time ones {LIMITED_TIME}; "
            "a third of the member sales with coupons reserve their uses first ..."
        )
        _, checkout_key = await create_api_key(db, "checkout", "make run simulator")
        checkout = Checkout(query_url, checkout_key)
        try:
            summary = await simulate(
                settings,
                SimulationOptions(
                    receipts=3000,
                    rate=1000,
                    customers=1000,
                    seed=42,
                    limited_time_share=0.1,
                    limited_time=LIMITED_TIME,
                    reserve_share=0.3,
                    lapse_share=0.1,
                ),
                progress=sys.stderr,
                checkout=checkout,
            )
        finally:
            await checkout.aclose()
        say(summary.render())

        applied = await _wait_for(db, "SELECT count(*) FROM receipts", summary.receipts)
        returns = await _wait_for(
            db,
            "SELECT count(*) FROM return_events WHERE status <> 'pending'",
            summary.returns - summary.resent_refunds,
            timeout=60,
        )
        say(f"\nreceipts applied: {applied} of {summary.receipts}; returns decided: {returns}")

        customer = await _busiest_customer(db)
        coupons = (
            await http.get(
                f"/v1/customers/{customer}/coupons",
                params={"include_ineligible": "true"},
                headers=read,
            )
        ).json()
        points = (
            await http.get(f"/v1/customers/{customer}/points", params={"limit": 5}, headers=read)
        ).json()
        say(f"\ncustomer {customer}'s coupons (GET /v1/customers/{customer}/coupons):")
        for coupon in coupons["coupons"]:
            state = "eligible" if coupon["eligible"] else coupon["reason"]
            remaining = coupon["uses_remaining"]
            say(
                f"  {coupon['coupon_id']:<12} used {coupon['uses_made']}, "
                f"remaining {'unlimited' if remaining is None else remaining}: {state}"
            )
        say(
            f"customer {customer}'s points: balance {points['balance']}, latest entries "
            + ", ".join(f"{e['kind']} {e['points']:+d}" for e in points["ledger"])
        )
        say(f"  expiring: {_expiring(points['expiring'])}")
        lots = await _count(db, "SELECT count(*) FROM points_ledger WHERE kind = 'expire'")
        expired = await _count(
            db, "SELECT coalesce(-sum(points), 0) FROM points_ledger WHERE kind = 'expire'"
        )
        say(
            f"points expired so far: {expired} from {lots} lots "
            f"(the expiry job looks every {EXPIRY_CHECK_SECONDS:.0f}s)"
        )
        say("repeat it with:")
        say(f"  export READ_KEY={read_key}")
        say(
            "  "
            + _curl(
                f"{query_url}/v1/customers/{customer}/coupons?include_ineligible=true", "READ_KEY"
            )
        )

        partial = await _show_partial_return(settings, db, http, read, customer)
        balance = (await http.get(f"/v1/customers/{customer}/points", headers=read)).json()[
            "balance"
        ]
        await _show_second_return(
            settings, db, http, read, customer, balance=balance, other_than=partial
        )
        await _show_reservations(settings, db, http, admin)
    await _show_dead_letters(settings, db)
    say(f"\nadmin key for trying the API: {admin_key}")
    say(f"the web console (sign in with that key): {query_url}/console/customers/{customer}")


LAUNCH_COUPON = "LAUNCH-3"
"""A campaign capped across all customers, to show reservations and a sold-out coupon."""


async def _show_reservations(
    settings: Settings, db: Database, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """Three checkouts hold the last three uses of a capped campaign; a fourth finds it sold
    out; one sale consumes its reservation, one reservation lapses and frees its use."""
    _, checkout_key = await create_api_key(db, "checkout", "make run")
    checkout = {"Authorization": f"Bearer {checkout_key}"}
    body = {"name": "Launch week: first 3 redemptions", "total_uses_permitted": 3}
    (await http.put(f"/v1/coupons/{LAUNCH_COUPON}", json=body, headers=admin)).raise_for_status()
    run = uuid.uuid4().hex[:6].upper()
    buyer, waiting, lapsing, late = (f"DEMO-{run}-{n}" for n in ("A", "B", "C", "D"))

    async def reserve(customer: str, ttl_seconds: int = 900) -> httpx.Response:
        return await http.post(
            f"/v1/customers/{customer}/coupons/{LAUNCH_COUPON}/reservations",
            json={"uses": 1, "ttl_seconds": ttl_seconds, "store_id": "S0001"},
            headers={**checkout, "Idempotency-Key": f"{customer}-{LAUNCH_COUPON}"},
        )

    say(f"\nreservations: coupon {LAUNCH_COUPON} may be used 3 times across all customers")
    held: dict[str, dict[str, Any]] = {}
    for customer, ttl in ((buyer, 900), (waiting, 900), (lapsing, 8)):
        response = await reserve(customer, ttl)
        response.raise_for_status()
        held[customer] = response.json()
        say(
            f"  POST .../customers/{customer}/coupons/{LAUNCH_COUPON}/reservations -> "
            f"{response.status_code}, held until {held[customer]['expires_at']}, "
            f"total_uses_remaining {held[customer]['total_uses_remaining']}"
        )
    refused = await reserve(late)
    say(
        f"  a fourth customer, {late}: {refused.status_code} reason "
        f"{refused.json().get('reason')!r} (every use is made or held)"
    )
    sale = {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "transaction_no": f"DEMO-{run}-LAUNCH",
        "store_id": "S0001",
        "terminal_id": "T01",
        "customer_id": buyer,
        "occurred_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "currency": "JPY",
        "total": "500",
        "coupons": [
            {"coupon_id": LAUNCH_COUPON, "uses": 1, "reservation_id": held[buyer]["reservation_id"]}
        ],
    }
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topics.receipts, json.dumps(sale).encode(), key=buyer.encode()
        )
    finally:
        await producer.stop()
    await _wait_for(
        db,
        "SELECT count(*) FROM reservations WHERE reservation_id = $1 AND status = 'consumed'",
        1,
        held[buyer]["reservation_id"],
        timeout=30,
    )
    say(f"  {buyer}'s sale named its reservation: consumed, the use now counts as made")
    listed = (await http.get(f"/v1/customers/{waiting}/reservations", headers=checkout)).json()
    say(f"  {waiting} still holds {len(listed['reservations'])} reservation (GET .../reservations)")
    url = f"/v1/customers/{late}/coupons/{LAUNCH_COUPON}"
    seen = (await http.get(url, headers=checkout)).json()
    say(f"  {late} sees: {seen['reason']}, total_uses_remaining {seen['total_uses_remaining']}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while seen["reason"] == "sold_out" and loop.time() < deadline:
        await asyncio.sleep(0.5)
        seen = (await http.get(url, headers=checkout)).json()
    say(
        f"  {lapsing}'s reservation lapsed after 8 s (no job needed): {late} now sees "
        f"{'eligible' if seen['eligible'] else seen['reason']}, "
        f"total_uses_remaining {seen['total_uses_remaining']}"
    )
    say(f"  export CHECKOUT_KEY={checkout_key}")
    say("  " + _curl(f"{http.base_url}/v1/customers/{waiting}/reservations", "CHECKOUT_KEY"))


def _expiring(expiring: list[dict[str, Any]], shown: int = 4) -> str:
    """The ``expiring`` field of GET /v1/customers/{id}/points, soonest first, in a line."""
    if not expiring:
        return "nothing"
    parts = [f"{e['points']} at {e['expires_at']}" for e in expiring[:shown]]
    more = len(expiring) - shown
    return ", ".join(parts) + (f" and {more} moments more" if more > 0 else "")


async def _busiest_customer(db: Database) -> str:
    async with db.connection() as conn:
        customer: str = await conn.fetchval(
            # Someone with several coupons in use but not all of them used up.
            "SELECT customer_id FROM coupon_usage GROUP BY customer_id "
            "ORDER BY count(*) DESC, sum(uses_made), customer_id LIMIT 1"
        )
    return customer


async def _show_second_return(
    settings: Settings,
    db: Database,
    http: httpx.AsyncClient,
    read: dict[str, str],
    customer: str,
    *,
    balance: int,
    other_than: str,
) -> None:
    async with db.connection() as conn:
        # A sale with coupons and burned points shows the most; one whose earned points the
        # customer still holds, as a real return desk's customer would (the contract lets a
        # return take a balance below zero, but the demo's customer should not need it).
        tx: str = await conn.fetchval(
            "SELECT transaction_no FROM receipts AS r WHERE customer_id = $1 "
            "AND transaction_no <> $3 AND NOT EXISTS "
            "(SELECT 1 FROM return_events AS e WHERE e.transaction_no = r.transaction_no) "
            "ORDER BY $2::bigint + points_used - points_earned >= 0 DESC, "
            "jsonb_array_length(coupons) > 0 DESC, points_used DESC, occurred_at DESC "
            "LIMIT 1",
            customer,
            balance,
            other_than,
        )
    await _send_returns(settings, db, tx, [_return_event(tx) for _ in range(2)])
    first = (await http.get(f"/v1/receipts/{tx}", headers=read)).json()["returns"][0]
    latest = (await http.get(f"/v1/returns/{tx}", headers=read)).json()
    say(f"\nreturning {tx} twice at the return desk:")
    say(
        f"  first:  {first['status']}, points restored {first['points_restored']}, "
        f"revoked {first['points_revoked']}, coupons {first['coupons_restored']}"
    )
    say(f"  second: {latest['status']} ({latest['reason']})  <- GET /v1/returns/{tx}")
    after = (await http.get(f"/v1/customers/{customer}/points", headers=read)).json()["balance"]
    say(f"  customer {customer}'s balance now {after} (was {balance}): points moved once")


async def _show_partial_return(
    settings: Settings, db: Database, http: httpx.AsyncClient, read: dict[str, str], customer: str
) -> str:
    """Return one unit of one line of a sale of several lines, and show what it moved."""
    async with db.connection() as conn:
        tx: str = await conn.fetchval(
            "SELECT transaction_no FROM receipts AS r WHERE customer_id = $1 AND NOT EXISTS "
            "(SELECT 1 FROM return_events AS e WHERE e.transaction_no = r.transaction_no) "
            "ORDER BY jsonb_array_length(document -> 'lines') > 1 DESC, points_earned DESC, "
            "occurred_at DESC LIMIT 1",
            customer,
        )
    before = (await http.get(f"/v1/receipts/{tx}", headers=read)).json()
    event = _return_event(tx, lines=[{"line_no": 1, "quantity": 1}])
    await _send_returns(settings, db, tx, [event])
    after = (await http.get(f"/v1/receipts/{tx}", headers=read)).json()
    outcome = after["return"]
    line = before["lines"][0]
    say(f"\nreturning one {line['description']} of {tx} (return_id {event['return_id']}):")
    say(
        f"  {outcome['status']}: lines {outcome['lines']}, points restored "
        f"{outcome['points_restored']} of {before['points_used']}, revoked "
        f"{outcome['points_revoked']} of {before['points_earned']}, fully returned "
        f"{outcome['fully_returned']}"
    )
    say(f"  still to return: {after['lines_remaining']}  <- GET /v1/receipts/{tx}")
    return tx


async def _send_returns(
    settings: Settings, db: Database, tx: str, events: list[dict[str, Any]]
) -> None:
    """Publish return events of one sale and wait until each is decided."""
    async with db.connection() as conn:
        decided: int = await conn.fetchval(
            "SELECT count(*) FROM return_events WHERE transaction_no = $1 AND status <> 'pending'",
            tx,
        )
    producer = make_producer(settings)
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(
                settings.topics.returns, json.dumps(event).encode(), key=tx.encode()
            )
    finally:
        await producer.stop()
    await _wait_for(
        db,
        "SELECT count(*) FROM return_events WHERE transaction_no = $1 AND status <> 'pending'",
        decided + len(events),
        tx,
        timeout=30,
    )


def _return_event(tx: str, *, lines: list[dict[str, int]] | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "transaction_no": tx,
        "store_id": "S0001",
        "terminal_id": "T01",
        "occurred_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "reason": "changed mind",
    }
    if lines is not None:
        event["return_id"] = f"DEMO-{uuid.uuid4().hex[:8]}"
        event["lines"] = lines
    return event


async def _show_dead_letters(settings: Settings, db: Database) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topics.receipts, b"{not json", key=b"demo")
        await producer.send_and_wait(
            settings.topics.receipts, json.dumps({"schema_version": 2}).encode(), key=b"demo"
        )
    finally:
        await producer.stop()
    consumer = make_consumer(
        settings, settings.topics.receipts_dlq, group_id=f"demo-{uuid.uuid4().hex[:8]}"
    )
    await consumer.start()
    seen: list[tuple[str, str]] = []
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while len(seen) < 2 and asyncio.get_running_loop().time() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                for record in batch:
                    headers = {k: v.decode() for k, v in record.headers}
                    seen.append(
                        (headers["punchcard.error.reason"], headers["punchcard.error.detail"][:70])
                    )
    finally:
        await consumer.stop()
    say(f"\ndead letters in {settings.topics.receipts_dlq}:")
    for reason, detail in seen:
        say(f"  {reason:<28} {detail}")


async def _run(endpoints: Endpoints, logs: Path, stop: asyncio.Event) -> None:
    settings = Settings(
        database_url=endpoints.database_url,
        kafka_bootstrap_servers=endpoints.bootstrap_servers,
        log_format="console",
        return_wait_seconds=60,
        points_lifetime=POINTS_LIFETIME,
        points_expiry_check_seconds=EXPIRY_CHECK_SECONDS,
    )
    configure_logging(settings.model_copy(update={"log_level": "WARNING"}))
    await _prepare(settings)
    say("starting the services:")
    services = await asyncio.to_thread(_start_services, settings, logs)
    try:
        db = await Database.connect(settings.database_url, max_size=4)
        try:
            await _show(settings, services["coupon-query"].url, db)
        finally:
            await db.close()
        say("\nPunchcard is running; environment for the punchcard command:")
        for name, value in endpoints.environment().items():
            say(f"  export {name}={value}")
        say("press Ctrl-C to stop everything.")
        await stop.wait()
    finally:
        say("\nstopping the services ...")
        for service in services.values():
            code = await asyncio.to_thread(service.terminate)
            say(f"  {service.name} exited with {code}")


def main() -> int:
    """Bring everything up, show it, hold it until Ctrl-C, stop it all."""
    logs = Path(tempfile.mkdtemp(prefix="punchcard-run-"))
    stack = DevStack(log=say)
    say("starting Kafka and PostgreSQL ...")
    try:
        endpoints = stack.start()
    except DevStackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(endpoints, logs))
    except DevStackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        stack.stop()
        say("stopped Kafka and PostgreSQL; nothing is left running.")


async def _main(endpoints: Endpoints, logs: Path) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if os.environ.get("PUNCHCARD_DEMO_EXIT"):  # for a scripted check: show, then stop
        stop.set()
    await _run(endpoints, logs, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
