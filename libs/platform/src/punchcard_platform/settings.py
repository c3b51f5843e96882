"""Configuration, read once from the ``PUNCHCARD_*`` environment and passed down.

Nothing else in Punchcard reads the environment: services receive a ``Settings`` so
tests can build one by hand (``Settings(database_url=..., ...)``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from punchcard_contract.program import (
    ExpireAt,
    ExpiryRules,
    parse_duration,
    parse_lifetime,
    parse_timezone,
)
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "TopicNames"]


def _usable_cores() -> int:
    """The cores this process may run on (a cpuset or taskset can leave fewer than exist)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class TopicNames(BaseSettings):
    """Every topic of CONTRACT.md section 1; each name can be overridden."""

    model_config = SettingsConfigDict(env_prefix="PUNCHCARD_TOPIC_", extra="ignore", frozen=True)

    receipts: str = "pos.receipts.v1"
    returns: str = "pos.returns.v1"
    coupon_usage: str = "punchcard.coupon-usage.v1"
    points: str = "punchcard.points.v1"
    return_outcomes: str = "punchcard.return-outcomes.v1"
    receipts_dlq: str = ""
    returns_dlq: str = ""

    @model_validator(mode="after")
    def _derive_dead_letter_topics(self) -> TopicNames:
        # A renamed input topic takes its dead letters along unless told otherwise.
        if not self.receipts_dlq:
            object.__setattr__(self, "receipts_dlq", f"{self.receipts}.dlq")
        if not self.returns_dlq:
            object.__setattr__(self, "returns_dlq", f"{self.returns}.dlq")
        return self

    @classmethod
    def suffixed(cls, suffix: str) -> TopicNames:
        """The contract's topic names with ``.suffix`` appended: a set nobody else uses.

        Tests and benchmarks share one broker; a suffix per run keeps them apart.
        """
        names = ("receipts", "returns", "coupon_usage", "points", "return_outcomes")
        return cls.model_validate(
            {name: f"{cls.model_fields[name].default}.{suffix}" for name in names}
        )

    def all(self) -> list[str]:
        """Every topic Punchcard reads or writes, for ``punchcard topics create``."""
        return [
            self.receipts,
            self.returns,
            self.coupon_usage,
            self.points,
            self.return_outcomes,
            self.receipts_dlq,
            self.returns_dlq,
        ]

    def dead_letter_topic(self, source_topic: str) -> str:
        """The DLQ of an input topic."""
        if source_topic == self.receipts:
            return self.receipts_dlq
        if source_topic == self.returns:
            return self.returns_dlq
        return f"{source_topic}.dlq"


class Settings(BaseSettings):
    """What a Punchcard process needs to know about the world around it."""

    model_config = SettingsConfigDict(env_prefix="PUNCHCARD_", extra="ignore", frozen=True)

    database_url: str = "postgresql://punchcard@127.0.0.1:5432/punchcard"
    database_pool_size: int = Field(default=10, ge=1, le=200)
    # A streaming replica for coupon-query's reads; writes always go to database_url.
    read_database_url: str | None = None
    database_command_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    """Longest any one statement may run: a silent network fails it instead of hanging."""
    database_acquire_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    """Longest a task waits for a pooled connection (or for a new one to open)."""

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_client_id: str = "punchcard"
    kafka_request_timeout_seconds: float = Field(default=15.0, gt=0, le=600)
    """Longest one request to a broker may go unanswered (longer than the session timeout,
    which a JoinGroup may legitimately take)."""
    kafka_session_timeout_seconds: float = Field(default=10.0, ge=1, le=300)
    """A consumer that stops heartbeating this long loses its partitions to the others."""
    kafka_send_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    """Longest a send waits for its acknowledgement before the producer is made anew."""

    topics: TopicNames = Field(default_factory=TopicNames)
    topic_partitions: int = Field(default=12, ge=1, le=10_000)
    topic_replication_factor: int = Field(default=1, ge=1, le=32)
    topic_min_insync_replicas: int | None = Field(default=None, ge=1, le=32)
    """Replicas that must have a record before an ``acks=all`` send is acknowledged; unset:
    one less than the replication factor (2 of 3), at least 1."""

    http_host: str = "127.0.0.1"
    http_port: int | None = Field(default=None, ge=0, le=65535)
    # Worker processes of coupon-query sharing its port, each with its own pool.
    http_workers: int = Field(default_factory=_usable_cores, ge=1, le=256)

    log_format: Literal["json", "console"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    return_wait_seconds: float = Field(default=600.0, ge=0)

    consumer_group_prefix: str = "punchcard"
    batch_max_records: int = Field(default=1000, ge=1, le=100_000)
    batch_wait_ms: int = Field(default=200, ge=0, le=60_000)
    consumer_halt_retry_max_seconds: float = Field(default=30.0, gt=0, le=3600)
    """Longest pause between two tries of a consumer halted by a fault that is not the
    records' (a bug, a missing privilege): it resumes within this once the fault is gone."""

    # The loyalty program (CONTRACT.md section 6): every service reads the same.
    points_lifetime: str = "never"
    points_expire_at: ExpireAt = "exact"
    program_timezone: str = "UTC"
    points_expiry_check_seconds: float = Field(default=60.0, gt=0, le=86_400)
    points_restore_grace: str = "P30D"

    @field_validator("points_lifetime")
    @classmethod
    def _a_lifetime(cls, value: str) -> str:
        parse_lifetime(value)
        return value

    @field_validator("points_restore_grace")
    @classmethod
    def _a_duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("program_timezone")
    @classmethod
    def _a_timezone(cls, value: str) -> str:
        parse_timezone(value)
        return value

    @property
    def expiry_rules(self) -> ExpiryRules:
        """When points expire, from the program's settings."""
        return ExpiryRules.of(
            lifetime=self.points_lifetime,
            expire_at=self.points_expire_at,
            timezone=self.program_timezone,
            restore_grace=self.points_restore_grace,
        )

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                "PUNCHCARD_KAFKA_SECURITY_PROTOCOL is SASL: set PUNCHCARD_KAFKA_SASL_MECHANISM, "
                "PUNCHCARD_KAFKA_SASL_USERNAME and PUNCHCARD_KAFKA_SASL_PASSWORD"
            )
        return self

    @model_validator(mode="after")
    def _in_sync_within_replicas(self) -> Settings:
        if self.min_insync_replicas > self.topic_replication_factor:
            raise ValueError(
                "PUNCHCARD_TOPIC_MIN_INSYNC_REPLICAS is larger than "
                "PUNCHCARD_TOPIC_REPLICATION_FACTOR: no send could ever be acknowledged"
            )
        return self

    @property
    def min_insync_replicas(self) -> int:
        """``min.insync.replicas`` for the topics ``punchcard topics create`` makes."""
        if self.topic_min_insync_replicas is not None:
            return self.topic_min_insync_replicas
        return max(1, self.topic_replication_factor - 1)

    def consumer_group(self, service: str) -> str:
        """The consumer group a service's instances share."""
        return f"{self.consumer_group_prefix}.{service}"

    def port_for(self, default: int) -> int:
        """The HTTP port: the configured one, else the service's own default."""
        return default if self.http_port is None else self.http_port

    def environment(self) -> dict[str, str]:
        """These settings as ``PUNCHCARD_*`` variables, to hand to a child process."""
        env: dict[str, str] = {}
        for name, value in self.model_dump(exclude={"topics"}).items():
            if value is not None:
                plain = value.get_secret_value() if isinstance(value, SecretStr) else value
                env[f"PUNCHCARD_{name.upper()}"] = str(plain)
        for name, value in self.topics.model_dump().items():
            env[f"PUNCHCARD_TOPIC_{name.upper()}"] = str(value)
        return env
