"""The sweep goes down from a first rate that fails instead of reporting that nothing held."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from bench import query
from bench.common import Sizes, latency_summary
from bench.http_load import LoadResult


def _target() -> query._Target:
    return query._Target(cast("Any", None), lambda i: f"/{i}", {}, "postgresql://unused")


def _service_holding_up_to(limit: float) -> Any:
    """A stand-in for ``query._measure``: p99 1 ms up to ``limit`` req/s, 50 ms above."""

    async def measure(target: query._Target, *, rate: float, seconds: float, warmup: float) -> Any:
        latency = 0.001 if rate <= limit else 0.05
        count = int(rate * seconds)
        result = LoadResult(first_send=0.0, last_done=seconds, statuses={200: count})
        result.latencies = [latency] * count
        result.samples = [(i / rate, latency) for i in range(count)]
        return query._Measured(
            result=result,
            sent=float(count),
            achieved=count / seconds,
            latency=latency_summary(result.latencies),
            service_cpu_seconds=0.0,
            postgresql_cpu_seconds=0.0,
            machine_busy_share={"busy": 0.5},
        )

    return measure


async def _idle(service: Any) -> None:
    return None


def _sweep(monkeypatch: pytest.MonkeyPatch, limit: float, start: float) -> dict[str, Any]:
    monkeypatch.setattr(query, "_measure", _service_holding_up_to(limit))
    monkeypatch.setattr(query, "_until_idle", _idle)
    return asyncio.run(query._sweep(_target(), Sizes(), start=start))


def test_a_first_rate_that_fails_is_halved_until_one_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting at 200 with a limit of 60: 100 fails, 50 holds, then the gap is narrowed."""
    sweep = _sweep(monkeypatch, limit=60, start=200)

    offered = [step["offered_rps"] for step in sweep["steps"]]
    assert offered[:5] == [200, 200, 100, 100, 50]
    assert 50 <= sweep["max_rps_at_p99_limit"] <= 60


def test_nothing_holds_after_three_halvings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A service that holds nothing above 1 req/s reports 0 after 200, 100, 50 and 25."""
    sweep = _sweep(monkeypatch, limit=1, start=200)

    assert sorted({step["offered_rps"] for step in sweep["steps"]}) == [25, 50, 100, 200]
    assert sweep["max_rps_at_p99_limit"] == 0.0
