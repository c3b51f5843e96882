"""Why an inbound event was refused.

The hierarchy is deliberately flat::

    Exception
    └── InvalidEventError      the record can never be applied; dead-letter it
            .reason            a DeadLetterReason (the ``punchcard.error.reason`` header)
            .detail            readable text, at most 4 KiB (``punchcard.error.detail``)

A record that fails for a *transient* reason (database down, broker gone) is not an
``InvalidEventError``: it is retried, never dead-lettered. See CONTRACT.md section 4.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["MAX_DETAIL_BYTES", "DeadLetterReason", "InvalidEventError", "truncate_detail"]

MAX_DETAIL_BYTES = 4096
"""The contract caps the ``punchcard.error.detail`` header at 4 KiB of UTF-8."""

_ELLIPSIS = "…"


class DeadLetterReason(StrEnum):
    """The values of the ``punchcard.error.reason`` dead-letter header."""

    INVALID_JSON = "invalid_json"
    SCHEMA_VIOLATION = "schema_violation"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    CONFLICTING_DUPLICATE = "conflicting_duplicate"
    PAYLOAD_TOO_LARGE = "payload_too_large"


def truncate_detail(detail: str, limit: int = MAX_DETAIL_BYTES) -> str:
    """Cut ``detail`` to at most ``limit`` UTF-8 bytes, never splitting a character.

    Kafka headers are bytes and the contract promises operators at most 4 KiB, so the
    cut is measured in encoded bytes, and a trailing ellipsis shows that text was lost.
    """
    encoded = detail.encode("utf-8", errors="replace")
    if len(encoded) <= limit:
        return detail
    room = max(limit - len(_ELLIPSIS.encode("utf-8")), 0)
    # errors="ignore" drops the partial character the byte cut may have left at the end.
    return encoded[:room].decode("utf-8", errors="ignore") + _ELLIPSIS


class InvalidEventError(Exception):
    """An inbound record that can never be applied and must go to the dead-letter topic."""

    def __init__(self, reason: DeadLetterReason, detail: str) -> None:
        self.reason = DeadLetterReason(reason)
        self.detail = truncate_detail(detail)
        super().__init__(self.reason, self.detail)

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"
