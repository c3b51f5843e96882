"""The program's expiry rules: durations, calendar arithmetic, rounding, restores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from punchcard_contract.program import Duration, ExpiryRules, parse_duration, parse_lifetime

TOKYO = ZoneInfo("Asia/Tokyo")


@pytest.mark.parametrize(
    ("text", "duration"),
    [
        ("P1Y", Duration(months=12)),
        ("P18M", Duration(months=18)),
        ("P90D", Duration(days=90)),
        ("P2W", Duration(days=14)),
        ("PT30S", Duration(seconds=30)),
        ("P1Y2M3DT4H5M6S", Duration(months=14, days=3, seconds=4 * 3600 + 5 * 60 + 6)),
    ],
)
def test_an_iso_8601_duration_of_whole_units_is_read(text: str, duration: Duration) -> None:
    """Years fold into months and weeks into days; the clock part is seconds."""
    assert parse_duration(text) == duration


@pytest.mark.parametrize("text", ["", "P", "PT", "1Y", "P1.5Y", "-P1D", "P1H", "forever"])
def test_anything_else_is_refused_naming_the_text(text: str) -> None:
    """A setting that cannot be read says what it got."""
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_duration(text)


def test_never_is_no_lifetime() -> None:
    """``never`` (any case) means nothing expires."""
    assert parse_lifetime("never") is None
    assert parse_lifetime("NEVER") is None


@given(
    st.integers(0, 40),
    st.integers(0, 11),
    st.integers(0, 400),
    st.integers(0, 3),
    st.integers(0, 59),
)
def test_a_duration_reads_back_from_its_own_text(
    years: int, months: int, days: int, hours: int, seconds: int
) -> None:
    """``str`` writes what ``parse_duration`` reads as the same duration."""
    duration = Duration(months=years * 12 + months, days=days, seconds=hours * 3600 + seconds)
    assert parse_duration(str(duration)) == duration


def test_a_month_after_the_31st_of_january_is_the_end_of_february() -> None:
    """Month arithmetic clamps to the month's end, leap years included."""
    month = Duration(months=1)
    assert month.after(datetime(2027, 1, 31, 10, tzinfo=UTC), ZoneInfo("UTC")) == datetime(
        2027, 2, 28, 10, tzinfo=UTC
    )
    assert month.after(datetime(2028, 1, 31, 10, tzinfo=UTC), ZoneInfo("UTC")) == datetime(
        2028, 2, 29, 10, tzinfo=UTC
    )


def test_the_calendar_is_the_programs_time_zone() -> None:
    """31 Jan 20:00 UTC is already 1 Feb in Tokyo: one month later is 1 Mar there."""
    sale = datetime(2027, 1, 31, 20, tzinfo=UTC)
    assert Duration(months=1).after(sale, TOKYO) == datetime(2027, 3, 1, 5, tzinfo=TOKYO)


def test_expiry_rounds_up_to_the_end_of_the_day_or_month_in_the_programs_zone() -> None:
    """The end of a day or month is the first instant of the next, in that zone."""
    sale = datetime(2027, 3, 10, 16, tzinfo=UTC)  # 11 Mar 01:00 in Tokyo
    day = ExpiryRules(Duration(days=1), "end_of_day", TOKYO)
    month = ExpiryRules(Duration(months=1), "end_of_month", TOKYO)
    exact = ExpiryRules(Duration(days=1), "exact", TOKYO)

    assert exact.expires_at(sale) == sale + timedelta(days=1)
    assert day.expires_at(sale) == datetime(2027, 3, 13, tzinfo=TOKYO)
    assert month.expires_at(sale) == datetime(2027, 5, 1, tzinfo=TOKYO)
    assert month.expires_at(datetime(2027, 11, 30, tzinfo=TOKYO)) == datetime(
        2028, 1, 1, tzinfo=TOKYO
    )


def test_a_receipts_own_expiry_wins_even_when_nothing_else_expires() -> None:
    """Limited-time points: ``points_expire_at`` as sent, lifetime or not."""
    own = datetime(2027, 6, 1, tzinfo=UTC)
    sale = datetime(2027, 1, 1, tzinfo=UTC)
    assert ExpiryRules().earned_expiry(sale, own) == own
    assert ExpiryRules().earned_expiry(sale, None) is None
    assert ExpiryRules(Duration(days=1)).earned_expiry(sale, None) == sale + timedelta(days=1)


def test_restored_points_keep_their_expiry_but_never_expire_within_the_grace() -> None:
    """The source lot's expiry, moved to the grace's end if sooner; none stays none."""
    rules = ExpiryRules(Duration(days=365), restore_grace=Duration(days=30))
    now = datetime(2027, 1, 1, tzinfo=UTC)
    far, near = now + timedelta(days=90), now + timedelta(days=3)

    assert rules.restored_expiry(far, from_a_lot=True, applied_at=now) == far
    assert rules.restored_expiry(near, from_a_lot=True, applied_at=now) == now + timedelta(days=30)
    assert rules.restored_expiry(None, from_a_lot=True, applied_at=now) is None
    assert rules.restored_expiry(None, from_a_lot=False, applied_at=now) == now + timedelta(
        days=365
    )
    assert ExpiryRules().restored_expiry(None, from_a_lot=False, applied_at=now) is None
