"""Services ride out a broker or database that is down at start-up, killed or restarted.

These tests crash servers, so they run on a Kafka and PostgreSQL of their own, never on
the session's. Each prints how long the service took to work again after the server
answered; the figure is reported, not asserted (machines differ), but the deadlines
below are far above what a healthy recovery takes.
"""

from __future__ import annotations

import asyncio
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest
from aiokafka.errors import KafkaError
from punchcard_devstack import DevStack, Endpoints, ServiceProcess
from punchcard_devstack.processes import free_port
from punchcard_platform.db import Database
from punchcard_platform.kafka import ResilientProducer, create_topics
from punchcard_platform.settings import Settings
from punchcard_returns.handler import ReturnHandler
from punchcard_returns.waiting import PendingReturnResolver

from tests.conftest import make_settings
from tests.documents import encode, receipt_document, return_document
from tests.helpers import eventually, produce, unique_id
from tests.integration.returns.support import send_returns, store_sales
from tests.stacks import running_stack

T = TypeVar("T")

RECOVERY_DEADLINE = 90.0
"""Generous on purpose: a loaded two-core machine is slow, and this is no speed test."""


@pytest.fixture(scope="module")
def own_stack() -> Iterator[DevStack]:
    """A Kafka and a PostgreSQL that only this module uses (and crashes)."""
    with running_stack(own=True) as devstack:
        yield devstack


def _endpoints(devstack: DevStack) -> Endpoints:
    assert devstack.endpoints is not None
    return devstack.endpoints


def _ensure_running(devstack: DevStack) -> None:
    """Leave the stack up for the next test, whatever this one did to it.

    Called from the main thread, never a worker thread: the devstack ties a server's
    parent-death signal to the thread that spawned it.
    """
    assert devstack.kafka is not None
    assert devstack.postgres is not None
    if devstack.kafka.pid is None:
        devstack.kafka.restart()
    if devstack.postgres.pid is None:
        devstack.postgres.restart()


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


async def _ready_is(service: ServiceProcess, expected: int) -> bool:
    return await asyncio.to_thread(_status, f"{service.url}/readyz") == expected


async def _log_says(service: ServiceProcess, text: str) -> bool:
    return service.log_file.exists() and text in service.log_file.read_text(errors="replace")


async def _stored_and_published(settings: Settings, transaction_no: str) -> bool:
    """The receipt is stored and every output event of it has been published."""
    try:
        conn = await asyncpg.connect(settings.database_url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    try:
        stored = await conn.fetchval(
            "SELECT count(*) FROM receipts WHERE transaction_no = $1", transaction_no
        )
        # The relay deletes a row once the broker acknowledged it: none left is all sent.
        unsent = await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE topic = $1", settings.topics.points
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return False
    finally:
        await conn.close()
    return bool(stored == 1 and unsent == 0)


async def _all_stored_and_published(settings: Settings, transaction_nos: list[str]) -> bool:
    for transaction_no in transaction_nos:
        if not await _stored_and_published(settings, transaction_no):
            return False
    return True


async def _until_stored_and_published(settings: Settings, transaction_no: str, what: str) -> None:
    await eventually(
        lambda: _stored_and_published(settings, transaction_no),
        timeout=RECOVERY_DEADLINE,
        what=what,
        interval=0.2,
    )


async def _until_ready(service: ServiceProcess) -> None:
    await eventually(
        lambda: _ready_is(service, 200), timeout=RECOVERY_DEADLINE, what="ready", interval=0.2
    )


async def _queue_output_event(settings: Settings) -> None:
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(
            "INSERT INTO outbox (topic, key, event_id, payload)"
            " VALUES ($1, 'C-waiting', gen_random_uuid(), convert_to('{}', 'UTF8'))",
            settings.topics.points,
        )
    finally:
        await conn.close()


async def _send_sale(settings: Settings) -> str:
    sale = receipt_document(unique_id("C"), points_earned=5)
    await produce(
        settings, settings.topics.receipts, [(sale["customer_id"].encode(), encode(sale))]
    )
    return str(sale["transaction_no"])


async def _start(settings: Settings, tmp_path: Path, name: str) -> ServiceProcess:
    service = ServiceProcess(
        name,
        env={**settings.environment(), "PUNCHCARD_LOG_FORMAT": "json"},
        port=free_port(),
        log_file=tmp_path / f"{name}.log",
    )
    service.start()
    await asyncio.to_thread(service.wait_healthy)
    return service


async def _settings_with_topics(devstack: DevStack) -> Settings:
    settings = make_settings(_endpoints(devstack), log_level="INFO")
    await create_topics(settings, settings.topics.all())
    # The scratch cluster runs with synchronous_commit=off: an immediate stop may lose
    # the last moments of commits, so make what came before durable first.
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    return settings


def _report(what: str, seconds: float) -> None:
    print(f"{what}: working again {seconds:.1f}s after the server answered", file=sys.stderr)


async def test_a_consumer_started_while_the_database_and_broker_are_down_waits_then_works(
    own_stack: DevStack, tmp_path: Path
) -> None:
    """No crash loop: it says what it waits for, is not ready meanwhile, and then works."""
    assert own_stack.kafka is not None
    assert own_stack.postgres is not None
    settings = await _settings_with_topics(own_stack)
    own_stack.kafka.kill()
    own_stack.postgres.stop_immediate()
    service = None
    try:
        service = await _start(settings, tmp_path, "receipt-consumer")
        await eventually(
            lambda: _log_says(service, "PostgreSQL is not reachable yet"), what="database wait"
        )
        assert await _ready_is(service, 503)
        own_stack.postgres.restart()  # from this thread: see _ensure_running
        await eventually(
            lambda: _log_says(service, "Kafka is not reachable yet"),
            timeout=RECOVERY_DEADLINE,
            what="broker wait",
        )
        assert await _ready_is(service, 503)
        assert service.running
        # An output event waiting in the outbox while no broker answers goes out once one
        # does (an absent broker must not be taken for a missing topic).
        await _queue_output_event(settings)

        own_stack.kafka.restart()  # from this thread: see _ensure_running
        answered = time.monotonic()
        await _until_ready(service)
        transaction_no = await _send_sale(settings)
        await _until_stored_and_published(
            settings, transaction_no, "the sale stored and its events published"
        )
        _report("start-up wait", time.monotonic() - answered)
        assert service.running
    finally:
        if service is not None:
            assert service.terminate() == 0, service.log_tail()
        _ensure_running(own_stack)


async def test_a_broker_restart_under_a_running_consumer_is_ridden_out(
    own_stack: DevStack, tmp_path: Path
) -> None:
    """SIGKILL of the broker: /readyz turns 503, and after the restart sales flow again."""
    assert own_stack.kafka is not None
    settings = await _settings_with_topics(own_stack)
    service = await _start(settings, tmp_path, "receipt-consumer")
    try:
        first = await _send_sale(settings)
        await _until_stored_and_published(settings, first, "first")
        await _until_ready(service)

        own_stack.kafka.kill()
        await eventually(
            lambda: _ready_is(service, 503), timeout=RECOVERY_DEADLINE, what="not ready"
        )
        own_stack.kafka.restart()  # from this thread: see _ensure_running
        answered = time.monotonic()
        second = await _send_sale(settings)
        await _until_stored_and_published(
            settings, second, "a sale after the restart stored and published"
        )
        _report("broker restart", time.monotonic() - answered)
        await _until_ready(service)
        assert service.running
    finally:
        assert service.terminate() == 0, service.log_tail()
        _ensure_running(own_stack)


async def test_a_database_restart_under_a_running_consumer_is_ridden_out(
    own_stack: DevStack, tmp_path: Path
) -> None:
    """Immediate stop of PostgreSQL mid-stream: not ready meanwhile, nothing lost after."""
    assert own_stack.postgres is not None
    settings = await _settings_with_topics(own_stack)
    service = await _start(settings, tmp_path, "receipt-consumer")
    try:
        first = await _send_sale(settings)
        await _until_stored_and_published(settings, first, "first")
        own_stack.postgres.stop_immediate()
        await eventually(
            lambda: _ready_is(service, 503), timeout=RECOVERY_DEADLINE, what="not ready"
        )
        # Sent while the database is away: it waits in Kafka, uncommitted.
        second = await _send_sale(settings)
        own_stack.postgres.restart()  # from this thread: see _ensure_running
        answered = time.monotonic()
        await _until_stored_and_published(
            settings, second, "the sale sent during the outage stored and published"
        )
        _report("database restart", time.monotonic() - answered)
        await _until_ready(service)
        assert service.running
    finally:
        assert service.terminate() == 0, service.log_tail()
        _ensure_running(own_stack)


async def _counts(settings: Settings, transaction_nos: list[str]) -> tuple[int, int]:
    """(receipts stored, earn entries booked) among these sales."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        stored = await conn.fetchval(
            "SELECT count(*) FROM receipts WHERE transaction_no = ANY($1::text[])",
            transaction_nos,
        )
        earned = await conn.fetchval(
            "SELECT count(*) FROM points_ledger WHERE transaction_no = ANY($1::text[])",
            transaction_nos,
        )
    finally:
        await conn.close()
    return int(stored), int(earned)


async def test_a_consumer_frozen_past_its_session_rejoins_and_nothing_is_doubled(
    own_stack: DevStack, tmp_path: Path
) -> None:
    """SIGSTOP past the session timeout: the other instance takes over; after SIGCONT the
    frozen one's late commit is refused, it joins again and keeps working."""
    settings = (await _settings_with_topics(own_stack)).model_copy(
        update={"kafka_session_timeout_seconds": 6.0}
    )
    first = await _start(settings, tmp_path / "a", "receipt-consumer")
    second = await _start(settings, tmp_path / "b", "receipt-consumer")
    sales: list[str] = []
    try:
        sales += [await _send_sale(settings) for _ in range(10)]
        await eventually(
            lambda: _equals(_counts(settings, sales), (10, 10)), timeout=RECOVERY_DEADLINE
        )
        first.pause()
        try:
            sales += [await _send_sale(settings) for _ in range(10)]
            # Only the instance still running can apply these: the frozen one was fenced.
            await eventually(
                lambda: _equals(_counts(settings, sales), (20, 20)),
                timeout=RECOVERY_DEADLINE,
                what="sales applied while one instance is frozen",
            )
        finally:
            first.resume()
        sales += [await _send_sale(settings) for _ in range(10)]
        await eventually(
            lambda: _equals(_counts(settings, sales), (30, 30)),
            timeout=RECOVERY_DEADLINE,
            what="sales applied after the frozen instance woke",
        )
        # The relay publishes after the commit (and its leader may be the instance that was
        # frozen), so publication is awaited, not assumed at the moment of the count.
        await eventually(
            lambda: _all_stored_and_published(settings, sales),
            timeout=RECOVERY_DEADLINE,
            what="every sale's events published",
        )
        assert first.running
        assert second.running
        await eventually(lambda: _ready_is(first, 200), timeout=RECOVERY_DEADLINE, what="ready")
    finally:
        assert first.terminate() == 0, first.log_tail()
        assert second.terminate() == 0, second.log_tail()
        _ensure_running(own_stack)


async def _equals(probe: Awaitable[T], expected: T) -> bool:
    return await probe == expected


async def test_a_send_while_the_broker_is_away_fails_in_bounded_time_and_the_producer_heals(
    own_stack: DevStack,
) -> None:
    """No acknowledgement waited for forever (aiokafka 1101); a fresh producer after it."""
    assert own_stack.kafka is not None
    settings = (await _settings_with_topics(own_stack)).model_copy(
        update={"kafka_send_timeout_seconds": 2.0}
    )
    topic = settings.topics.points
    producer = ResilientProducer(settings)
    await producer.start()
    try:
        await producer.send_all([(topic, b"k", b"before", [])])
        own_stack.kafka.kill()
        try:
            started = time.monotonic()
            with pytest.raises(KafkaError):
                await asyncio.wait_for(
                    producer.send_all([(topic, b"k", b"during", [])]), RECOVERY_DEADLINE
                )
            print(f"send failed after {time.monotonic() - started:.1f}s", file=sys.stderr)
        finally:
            own_stack.kafka.restart()
        await eventually(
            lambda: _sends(producer, topic), timeout=RECOVERY_DEADLINE, what="a send after it"
        )
        assert producer.recreated >= 1
    finally:
        await producer.stop()
        _ensure_running(own_stack)


async def _sends(producer: ResilientProducer, topic: str) -> bool:
    try:
        await producer.send_all([(topic, b"k", b"after", [])])
    except KafkaError:
        return False
    return True


async def test_the_waiting_returns_resolver_listens_again_after_a_database_restart(
    own_stack: DevStack,
) -> None:
    """Its LISTEN connection dies with the server; a new one hears the next receipt."""
    assert own_stack.postgres is not None
    settings = await _settings_with_topics(own_stack)
    db = await Database.connect(settings.database_url, max_size=4)
    # A long sweep: only a notification (on a LISTEN made again) explains a prompt decision.
    resolver = PendingReturnResolver(settings, db, sweep_seconds=600.0)
    stop = asyncio.Event()
    task = asyncio.ensure_future(resolver.run(stop))
    try:
        await eventually(lambda: _listening(db), timeout=RECOVERY_DEADLINE, what="LISTEN")
        own_stack.postgres.stop_immediate()
        own_stack.postgres.restart()
        sale = receipt_document(unique_id("C"), points_earned=3)
        tx = sale["transaction_no"]
        # No wake-up from the handler: the resolver must hear the receipt's NOTIFY.
        await eventually(
            lambda: _applies(
                send_returns(ReturnHandler(settings, db), settings, return_document(tx))
            ),
            timeout=RECOVERY_DEADLINE,
            what="the return stored after the restart",
        )
        await store_sales(db, settings, sale)
        await eventually(
            lambda: _equals(_return_status(db, tx), "accepted"),
            timeout=RECOVERY_DEADLINE,
            what="the waiting return applied",
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await db.close()
        _ensure_running(own_stack)


async def _listening(db: Database) -> bool:
    async with db.connection() as conn:
        listening: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE query ILIKE 'LISTEN%punchcard_receipts%' AND state = 'idle'"
        )
    return listening > 0


async def _applies(action: Awaitable[None]) -> bool:
    try:
        await action
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return False
    return True


async def _return_status(db: Database, transaction_no: str) -> str | None:
    async with db.connection() as conn:
        status: str | None = await conn.fetchval(
            "SELECT status FROM return_events WHERE transaction_no = $1", transaction_no
        )
    return status
