"""The receipt consumer as a running service: the composition root.

Builds the handler from settings and hands it to the shared consumer service, which waits
for the database and the broker, runs the Kafka loop, the outbox relay, the points expiry
job, ``/healthz`` and ``/metrics``, and stops on SIGTERM.
"""

from __future__ import annotations

import asyncio

from punchcard_platform.expiry import ExpiryJob
from punchcard_platform.service import ConsumerWiring, serve_consumer
from punchcard_platform.settings import Settings

from punchcard_receipt_consumer.handler import ReceiptHandler

__all__ = ["DEFAULT_PORT", "serve"]

DEFAULT_PORT = 8081


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Consume ``pos.receipts.v1`` until stopped; what ``punchcard serve receipt-consumer`` runs."""
    await serve_consumer(
        settings,
        name=ReceiptHandler.name,
        topic=settings.topics.receipts,
        default_port=DEFAULT_PORT,
        wire=lambda db: ConsumerWiring(
            ReceiptHandler(db, settings.topics, rules=settings.expiry_rules),
            extra_tasks=[ExpiryJob(settings, db).run],
        ),
        stop=stop,
    )
