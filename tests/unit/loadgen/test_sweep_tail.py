"""A sweep step's slowest 1%: sent late (the machine) or answered slowly (the service)."""

from __future__ import annotations

from bench.http_load import LoadResult
from bench.query import _slowest


def _result(stall_at: float, *, late_sends: bool) -> LoadResult:
    """1,000 requests 1 ms apart answered in 1 ms, except 20 caught in a 100 ms stall."""
    result = LoadResult(first_send=100.0)
    for n in range(1000):
        scheduled = 100.0 + n / 1000
        stalled = stall_at <= n / 1000 < stall_at + 0.02
        latency = 0.1 if stalled else 0.001
        lag = 0.099 if stalled and late_sends else 0.0
        result.samples.append((scheduled, latency))
        result.send_lag_at[scheduled] = lag
    return result


def test_a_stall_of_the_service_shows_as_slow_answers_in_one_window() -> None:
    """Sent on time, answered 100 ms late, all due within the stall's 20 ms."""
    slow = _slowest(_result(0.5, late_sends=False))
    assert slow["requests"] == 10
    assert slow["median_send_lag_ms"] == 0.0
    assert slow["median_answer_ms"] == 100.0
    assert 0.5 <= slow["window_s"][0] <= slow["window_s"][1] < 0.52


def test_a_stall_of_the_generator_shows_as_late_sends() -> None:
    """The same latency, lost before the requests left: the machine's, not the service's."""
    slow = _slowest(_result(0.2, late_sends=True))
    assert slow["median_send_lag_ms"] == 99.0
    assert slow["median_answer_ms"] == 1.0
