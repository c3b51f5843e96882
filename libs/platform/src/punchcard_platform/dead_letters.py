"""The dead-letter writer: a record that cannot be applied goes to ``<topic>.dlq`` unchanged.

CONTRACT.md section 4: original key and bytes, and headers saying why and from where.
The consumer loop commits past a record only after its dead letter is acknowledged.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from punchcard_contract import truncate_detail

from punchcard_platform.kafka import ResilientProducer
from punchcard_platform.metrics import RECORDS_DEAD_LETTERED
from punchcard_platform.records import DeadLetter
from punchcard_platform.settings import TopicNames

__all__ = ["DeadLetterWriter", "dead_letter_headers"]

log = structlog.get_logger(__name__)


def dead_letter_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The headers CONTRACT.md section 4 requires, detail cut to at most 4 KiB."""
    record = letter.record
    return [
        ("punchcard.error.reason", str(letter.reason).encode()),
        ("punchcard.error.detail", truncate_detail(letter.detail).encode("utf-8")),
        ("punchcard.source.topic", record.topic.encode()),
        ("punchcard.source.partition", str(record.partition).encode()),
        ("punchcard.source.offset", str(record.offset).encode()),
    ]


class DeadLetterWriter:
    """Writes dead letters and waits until the broker has every one of them."""

    def __init__(self, producer: ResilientProducer, topics: TopicNames, service: str) -> None:
        self._producer = producer
        self._topics = topics
        self._service = service

    async def write(self, letters: Sequence[DeadLetter]) -> None:
        """Send all ``letters`` and await their acknowledgement; ``KafkaError`` if one fails."""
        if not letters:
            return
        for letter in letters:
            record = letter.record
            log.warning(
                "dead-lettering record",
                reason=str(letter.reason),
                detail=letter.detail[:500],
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )
        # Bounded: a broker that is away raises here (and the loop retries) instead of
        # leaving the batch waiting for acknowledgements forever.
        await self._producer.send_all(
            [
                (
                    self._topics.dead_letter_topic(letter.record.topic),
                    letter.record.key,
                    letter.record.value,
                    dead_letter_headers(letter),
                )
                for letter in letters
            ]
        )
        for letter in letters:
            RECORDS_DEAD_LETTERED.labels(
                self._service, letter.record.topic, str(letter.reason)
            ).inc()
