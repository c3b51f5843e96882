"""`punchcard dlq`: its filters are read as the operator means them, or refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from punchcard.cli import build_parser


def test_replay_filters_by_reason_time_and_id() -> None:
    """--since takes an RFC 3339 time with its offset; --id a number."""
    args = build_parser().parse_args(
        ["dlq", "replay", "--reason", "invalid_json", "--since", "2026-12-01T00:00:00+09:00"]
    )
    assert args.reason == "invalid_json"
    assert args.since == datetime(2026, 12, 1, tzinfo=timezone(timedelta(hours=9)))
    assert args.id is None
    listed = build_parser().parse_args(["dlq", "list", "--id", "7", "--since", "2026-12-01T00:00Z"])
    assert (listed.id, listed.limit, listed.since) == (7, 100, datetime(2026, 12, 1, tzinfo=UTC))


def test_a_time_without_its_offset_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """A local time would mean another moment on every machine: say so and stop."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["dlq", "replay", "--since", "2026-12-01T00:00:00"])
    assert "with its offset" in capsys.readouterr().err
