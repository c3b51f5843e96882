"""The plain values that flow through the consumer loop: records in, dead letters out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import structlog
from punchcard_contract import DeadLetterReason

__all__ = ["BatchHandler", "DeadLetter", "Decoded", "InboundRecord", "refuse_conflicting"]

log = structlog.get_logger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class InboundRecord:
    """One Kafka record as it arrived, independent of the client library."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Decoded(Generic[T]):
    """A record together with the event decoded from it at the edge."""

    record: InboundRecord
    event: T


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that cannot be applied, and why: goes to ``<topic>.dlq`` unchanged."""

    record: InboundRecord
    reason: DeadLetterReason
    detail: str


class BatchHandler(Protocol[T]):
    """What a service gives the shared consumer loop, and nothing more.

    ``decode`` validates one record at the edge (raise ``InvalidEventError`` to dead-letter
    it). ``apply`` applies a whole batch in one database transaction and returns the
    records it refuses (such as conflicting duplicates). ``apply`` must be idempotent:
    after a crash the same records arrive again and must change nothing twice.
    """

    name: str

    def decode(self, record: InboundRecord) -> T:
        """Validate a record and return its event."""
        ...

    async def apply(self, batch: list[Decoded[T]]) -> list[DeadLetter]:
        """Apply the batch in one transaction; return the records to dead-letter."""
        ...


def refuse_conflicting(record: InboundRecord, detail: str, **context: object) -> DeadLetter:
    """A ``conflicting_duplicate`` dead letter, logged with the record's coordinates.

    Receipts (same ``transaction_no``) and returns (same ``return_id``) refuse a repeat
    with other content the same way: the first one stands.
    """
    log.warning(
        "conflicting duplicate refused",
        **context,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
    )
    return DeadLetter(record=record, reason=DeadLetterReason.CONFLICTING_DUPLICATE, detail=detail)
