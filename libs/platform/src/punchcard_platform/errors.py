"""Errors of the platform, and what the operator should do about each.

PunchcardError
├── ConfigurationError          bad settings: the message says which variable to fix
│   ├── DatabaseUnavailableError    PostgreSQL cannot be reached with the given URL
│   └── KafkaUnavailableError       no Kafka broker answers at the given address
└── MigrationError              the schema on disk and in the database disagree
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DatabaseUnavailableError",
    "KafkaUnavailableError",
    "MigrationError",
    "PunchcardError",
]


class PunchcardError(Exception):
    """Base of every error Punchcard raises on purpose."""


class ConfigurationError(PunchcardError):
    """The process cannot start as configured; the message says what to change."""


class DatabaseUnavailableError(ConfigurationError):
    """PostgreSQL does not answer at PUNCHCARD_DATABASE_URL."""


class KafkaUnavailableError(ConfigurationError):
    """No broker answers at PUNCHCARD_KAFKA_BOOTSTRAP_SERVERS."""


class MigrationError(PunchcardError):
    """An applied migration was changed after it ran."""
