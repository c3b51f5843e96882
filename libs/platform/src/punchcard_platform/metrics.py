"""The Prometheus metrics every service shares (DESIGN.md, "Operations")."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "BATCH_DURATION",
    "BATCH_SIZE",
    "CONSUMER_LAG",
    "OUTBOX_BACKLOG",
    "OUTBOX_FAILED",
    "OUTBOX_PUBLISHED",
    "OUTBOX_SET_ASIDE",
    "POINTS_EXPIRED",
    "POINTS_EXPIRY_OVERDUE",
    "RECORDS_APPLIED",
    "RECORDS_DEAD_LETTERED",
]

RECORDS_APPLIED = Counter(
    "punchcard_records_applied",
    "Input records applied (including redeliveries recognised as such).",
    ["service", "topic"],
)
RECORDS_DEAD_LETTERED = Counter(
    "punchcard_records_dead_lettered",
    "Input records written to a dead-letter topic.",
    ["service", "topic", "reason"],
)
BATCH_SIZE = Histogram(
    "punchcard_batch_size",
    "Records per applied batch.",
    ["service"],
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000),
)
BATCH_DURATION = Histogram(
    "punchcard_batch_duration_seconds",
    "Time to decode, apply and commit one batch.",
    ["service"],
)
CONSUMER_LAG = Gauge(
    "punchcard_consumer_lag",
    "Records between the committed offset and the end of the partition.",
    ["service", "topic", "partition"],
)
OUTBOX_BACKLOG = Gauge("punchcard_outbox_backlog", "Outbox rows not yet published.")
OUTBOX_PUBLISHED = Counter(
    "punchcard_outbox_published", "Output events published by the relay.", ["topic"]
)
OUTBOX_FAILED = Gauge(
    "punchcard_outbox_failed",
    "Output events set aside because the broker refused them for good (outbox_failed), "
    "as of the relay's last look; `punchcard outbox retry` sends them again.",
)
OUTBOX_SET_ASIDE = Counter(
    "punchcard_outbox_set_aside",
    "Output events the broker refused for good, set aside by the relay.",
    ["topic"],
)

POINTS_EXPIRED = Counter(
    "punchcard_points_expired",
    "Points expired by the expiry job (lots past their expires_at), in points.",
)
POINTS_EXPIRY_OVERDUE = Gauge(
    "punchcard_points_expiry_oldest_overdue_seconds",
    "How long ago the oldest lot still to expire was due, as of the expiry job's last look "
    "(0 when none is): above PUNCHCARD_POINTS_EXPIRY_CHECK_SECONDS, expiry is falling behind.",
)
