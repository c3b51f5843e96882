"""The simulator against the real broker: librdkafka's zstd batches, read back with aiokafka."""

from __future__ import annotations

import argparse
import io
from datetime import UTC, datetime
from random import Random

import pytest
from aiokafka import ConsumerRecord
from punchcard_contract import decode_receipt, decode_return
from punchcard_platform.errors import ConfigurationError
from punchcard_platform.settings import Settings, TopicNames

from punchcard.cli import build_parser
from punchcard.simulator import FleetModel, SimulationOptions, run_simulation, simulate
from tests.helpers import consume, unique_id

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)


def busy_options(**overrides: object) -> SimulationOptions:
    values: dict[str, object] = {
        "receipts": 300,
        "rate": 0,
        "stores": 5,
        "terminals_per_store": 3,
        "customers": 50,
        "anonymous_share": 0.3,
        "return_share": 0.3,
        "repeat_return_share": 0.5,
        "early_return_share": 0.5,
        "seed": 20261122,
        "customer_prefix": unique_id("C") + "-",
        "run_tag": unique_id("r"),
        **overrides,
    }
    return SimulationOptions(**values)  # type: ignore[arg-type]


def by_event_id(
    records: list[ConsumerRecord[bytes, bytes]],
) -> dict[str, ConsumerRecord[bytes, bytes]]:
    return {decode_return(r.value).event.event_id: r for r in records}


async def test_a_simulation_publishes_every_planned_event_keyed_per_contract(
    settings: Settings,
) -> None:
    """aiokafka reads librdkafka's zstd batches: every planned record, decoded, keyed right."""
    options = busy_options()
    summary = await simulate(settings, options, start=START)

    planned = list(
        FleetModel(options, Random(options.seed), START, options.run_tag or "").plan(300)
    )
    planned_receipts = {e.document["event_id"]: e for e in planned if e.kind == "receipt"}
    planned_returns = {e.document["event_id"]: e for e in planned if e.kind == "return"}
    assert summary.receipts == 300
    assert summary.returns == len(planned_returns)
    assert summary.repeated_returns > 0
    assert summary.early_returns > 0

    receipts = await consume(settings, settings.topics.receipts, count=summary.receipts)
    returns = await consume(settings, settings.topics.returns, count=summary.returns)
    assert len(receipts) == summary.receipts
    assert len(returns) == summary.returns

    for record in receipts:
        event = decode_receipt(record.value).event
        assert event.event_id in planned_receipts
        assert record.key == (event.customer_id or event.transaction_no).encode()
        if event.customer_id is None:
            assert event.points_used == event.points_earned == 0
    assert {decode_receipt(r.value).event.event_id for r in receipts} == set(planned_receipts)
    assert sum(decode_receipt(r.value).event.customer_id is None for r in receipts) == (
        summary.anonymous
    )

    published_returns = by_event_id(returns)
    assert set(published_returns) == set(planned_returns)
    for record in returns:
        assert record.key == decode_return(record.value).event.transaction_no.encode()


async def test_each_key_stays_on_one_partition_in_publishing_order(settings: Settings) -> None:
    """One customer's receipts arrive on one partition, in the order the fleet sent them."""
    options = busy_options(customers=5, anonymous_share=0, return_share=0)
    await simulate(settings, options, start=START)
    planned = list(
        FleetModel(options, Random(options.seed), START, options.run_tag or "").plan(300)
    )

    records = await consume(settings, settings.topics.receipts, count=300)
    partitions: dict[bytes | None, set[int]] = {}
    for record in records:
        partitions.setdefault(record.key, set()).add(record.partition)
    assert all(len(p) == 1 for p in partitions.values())
    for key in partitions:
        received = sorted((r for r in records if r.key == key), key=lambda r: r.offset)
        sent = [e.document["event_id"] for e in planned if e.key.encode() == key]
        assert [decode_receipt(r.value).event.event_id for r in received] == sent


async def test_a_paced_run_keeps_to_its_rate_and_draws_progress(settings: Settings) -> None:
    """At --rate 100, 30 receipts take about 0.3 s; the progress line ends with a newline."""
    progress = io.StringIO()
    summary = await simulate(
        settings, busy_options(receipts=30, rate=100, return_share=0), progress=progress
    )
    assert summary.receipts == 30
    assert summary.elapsed_seconds >= 0.29
    assert summary.receipts_per_second <= 105
    assert progress.getvalue().startswith("\r[")
    assert progress.getvalue().endswith("\n")
    assert "30 receipts" in progress.getvalue()


async def test_a_timed_run_stops_at_its_duration(settings: Settings) -> None:
    """--duration bounds the run when no receipt count is given."""
    summary = await simulate(
        settings, busy_options(receipts=None, duration=0.5, rate=40, return_share=0)
    )
    assert summary.elapsed_seconds >= 0.5
    assert 1 <= summary.receipts <= 21
    records = await consume(settings, settings.topics.receipts, count=summary.receipts)
    assert len(records) == summary.receipts


async def test_a_missing_topic_is_reported_as_a_configuration_error(settings: Settings) -> None:
    """The operator is told to create the topics instead of waiting on a timeout."""
    missing = settings.model_copy(
        update={"topics": TopicNames(receipts=unique_id("absent"), returns=settings.topics.returns)}
    )
    with pytest.raises(ConfigurationError, match="topics create"):
        await simulate(missing, busy_options(receipts=1))


async def test_the_command_prints_a_summary(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """`punchcard simulate` prints receipts, returns, elapsed and rate at the end."""
    args: argparse.Namespace = build_parser().parse_args(
        ["simulate", "--receipts", "40", "--rate", "0", "--return-share", "0.5",
         "--customer-prefix", unique_id("C") + "-", "--seed", "3"]
    )  # fmt: skip
    assert await run_simulation(settings, args) == 0
    out, err = capsys.readouterr()
    for label in ("receipts", "anonymous", "coupon uses", "points burned", "points earned",
                  "returns", "repeated", "early", "elapsed", "rate"):  # fmt: skip
        assert label in out
    assert "receipts          40" in out
    assert err.endswith("\n")
