"""The outbox relay: publishes committed output events in order, at least once.

One relay publishes at a time (a session advisory lock elects it), reading the rows in
id order. Writers take per-customer locks before writing outbox rows, so one
customer's rows have ids in commit order and this publishes them in that order. Each
row's payload is sent as stored (encoded once by its writer), and a row is deleted
once the broker has acknowledged it: one delete is the whole cost of "sent". A crash
after publishing and before the delete publishes the rows again with the same
``event_id``; readers drop repeats by it (CONTRACT.md section 1).

A row refused for good (over the topic's ``max.message.bytes``, say) would otherwise come
first in every round and hold back every row behind it: it is set aside into
``outbox_failed`` with the refusal; the rest keep their order per key. The client's own
refusal names its row; the broker's names a batch, so that row is found by sending the
round again in halves, in order.
After any other failure to send, the topics are checked again before the next round, so a
topic deleted since it was first seen is waited for instead of failing every round.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping

import asyncpg
import structlog
from aiokafka.errors import KafkaError

from punchcard_platform.db import Database, is_unavailable
from punchcard_platform.kafka import Refusal, ResilientProducer, SendFailedError, describe_refusal
from punchcard_platform.metrics import (
    OUTBOX_BACKLOG,
    OUTBOX_FAILED,
    OUTBOX_PUBLISHED,
    OUTBOX_SET_ASIDE,
)
from punchcard_platform.outbox import OUTBOX_CHANNEL, count_failed_publications, set_aside
from punchcard_platform.settings import Settings
from punchcard_platform.waits import wait_for_any

__all__ = ["OutboxRelay"]

log = structlog.get_logger(__name__)

_LEADER_LOCK_KEY = 0x6F7574626F78  # "outbox"
_TOPIC_CHECK_SECONDS = 3.0
_UNAVAILABLE_TOPIC_RETRY_SECONDS = 5.0


class OutboxRelay:
    """Publish outbox rows to Kafka and delete them once acknowledged."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        batch_size: int = 2000,
        idle_poll_seconds: float = 1.0,
    ) -> None:
        self._settings = settings
        self._db = db
        self._batch_size = batch_size
        self._idle_poll_seconds = idle_poll_seconds
        self._wake = asyncio.Event()
        self._known_topics: set[str] = set()
        self._unavailable: dict[str, float] = {}
        self.published = 0
        self.set_aside = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set, surviving database and broker outages."""
        # Bounded sends that heal themselves; a broker down at start-up is waited for below.
        producer = ResilientProducer(self._settings)
        await producer.start()
        try:
            while not stop.is_set():
                try:
                    await self._relay_while_connected(producer, stop)
                except Exception as exc:
                    if not (is_unavailable(exc) or isinstance(exc, asyncpg.PostgresError)):
                        log.exception("outbox relay failed; restarting it")
                    else:
                        log.warning("outbox relay lost the database; retrying", error=str(exc))
                    await self._wait(stop, 1.0)
        finally:
            await producer.stop()

    async def _relay_while_connected(
        self, producer: ResilientProducer, stop: asyncio.Event
    ) -> None:
        async with self._db.connection() as conn:
            await conn.add_listener(OUTBOX_CHANNEL, self._on_notify)
            try:
                while not stop.is_set():
                    if await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LEADER_LOCK_KEY):
                        break
                    # Another instance relays; stand by in case it goes away.
                    await self._wait(stop, 2.0)
                rounds = 0
                while not stop.is_set():
                    sent = await self._publish_once(conn, producer)
                    rounds += 1
                    if rounds % 50 == 1:
                        await self._housekeeping(conn)
                    if sent < self._batch_size:
                        await self._wait(stop, self._idle_poll_seconds)
            finally:
                with contextlib.suppress(Exception):
                    await conn.remove_listener(OUTBOX_CHANNEL, self._on_notify)
                    await conn.execute("SELECT pg_advisory_unlock_all()")

    async def _publish_once(self, conn: asyncpg.Connection, producer: ResilientProducer) -> int:
        now = time.monotonic()
        unavailable = [topic for topic, until in self._unavailable.items() if until > now]
        rows = await conn.fetch(
            """
            SELECT id, topic, key, event_id::text AS event_id, payload FROM outbox
            WHERE topic <> ALL($2::text[]) ORDER BY id LIMIT $1
            """,
            self._batch_size,
            unavailable,
        )
        missing = {
            t for t in {r["topic"] for r in rows} if not await self._topic_exists(producer, t)
        }
        # Order is per topic, so a topic that cannot be written waits without holding up
        # the others; its rows stay unsent and go out once the topic exists.
        rows = [r for r in rows if r["topic"] not in missing]
        if not rows:
            return 0
        rows, refused = await self._send_setting_aside_refusals(conn, producer, rows)
        await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", [r[0] for r in rows])
        per_topic: dict[str, int] = {}
        for row in rows:
            per_topic[row[1]] = per_topic.get(row[1], 0) + 1
        for topic, count in per_topic.items():
            OUTBOX_PUBLISHED.labels(topic).inc(count)
        self.published += len(rows)
        return len(rows) + refused

    async def _send_setting_aside_refusals(
        self, conn: asyncpg.Connection, producer: ResilientProducer, rows: list[asyncpg.Record]
    ) -> tuple[list[asyncpg.Record], int]:
        """Send ``rows`` in order; the rows acknowledged, and how many were set aside.

        A row the client refused before sending it blames no other row: it is set aside
        and the rest stand as they are. The broker refuses a whole batch of records for one
        record too large, so its refusal among several rows blames none of them yet: the
        rows are sent again in two halves, one after the other (keeping their order), until
        a row refused on its own is found and set aside. Rows acknowledged before such a
        refusal are sent again; readers drop the repeats by ``event_id``.
        """
        try:
            outcomes = await producer.send_each(
                [
                    (topic, key.encode(), payload, [("punchcard.event_id", event_id.encode())])
                    for _, topic, key, event_id, payload in rows
                ]
            )
        except SendFailedError as exc:
            # Check every topic again before the next round: one may have gone away.
            self._known_topics.clear()
            if not exc.refusals:
                raise
            refusals: Mapping[int, Refusal] = exc.refusals
            failure: SendFailedError | None = exc
        else:
            refusals = {i: refusal for i, refusal in enumerate(outcomes) if refusal is not None}
            failure = None
        for index, refusal in refusals.items():
            if refusal.before_sending:
                await self._set_aside(conn, rows[index], refusal.error)
        alone = sum(refusal.before_sending for refusal in refusals.values())
        rest = [
            row for i, row in enumerate(rows) if i not in refusals or not refusals[i].before_sending
        ]
        if alone == len(refusals):
            if failure is not None:
                raise failure
            return rest, alone
        if len(rest) == 1:
            blamed = next(r for r in refusals.values() if not r.before_sending)
            await self._set_aside(conn, rest[0], blamed.error)
            return [], alone + 1
        middle = len(rest) // 2
        first, first_refused = await self._send_setting_aside_refusals(
            conn, producer, rest[:middle]
        )
        then, then_refused = await self._send_setting_aside_refusals(conn, producer, rest[middle:])
        return first + then, alone + first_refused + then_refused

    async def _set_aside(
        self, conn: asyncpg.Connection, row: asyncpg.Record, error: KafkaError
    ) -> None:
        refusal = describe_refusal(error)
        await set_aside(conn, {row["id"]: refusal})
        log.error(
            "output event refused by the broker for good; set aside",
            topic=row["topic"],
            key=row["key"],
            event_id=row["event_id"],
            bytes=len(row["payload"]),
            error=refusal,
        )
        OUTBOX_SET_ASIDE.labels(row["topic"]).inc()
        self.set_aside += 1
        OUTBOX_FAILED.set(await count_failed_publications(conn))

    async def _topic_exists(self, producer: ResilientProducer, topic: str) -> bool:
        if topic in self._known_topics:
            return True
        try:
            # Without this bound, sending to a missing topic blocks the relay for the whole
            # metadata timeout on every attempt.
            await asyncio.wait_for(producer.partitions_for(topic), _TOPIC_CHECK_SECONDS)
        except (TimeoutError, KafkaError):
            # A configuration problem, not a crash: no traceback.
            log.error("output topic does not exist; its events wait", topic=topic)  # noqa: TRY400
            self._unavailable[topic] = time.monotonic() + _UNAVAILABLE_TOPIC_RETRY_SECONDS
            return False
        self._known_topics.add(topic)
        return True

    async def _housekeeping(self, conn: asyncpg.Connection) -> None:
        OUTBOX_BACKLOG.set(await conn.fetchval("SELECT count(*) FROM outbox"))
        OUTBOX_FAILED.set(await count_failed_publications(conn))

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _wait(self, stop: asyncio.Event, seconds: float) -> None:
        await wait_for_any(stop, self._wake, seconds=seconds)
        self._wake.clear()
