"""The loyalty program's expiry rules (CONTRACT.md section 6), on plain values.

A lifetime is an ISO 8601 duration counted on the program's calendar: years and months
move the date in ``PUNCHCARD_PROGRAM_TIMEZONE`` and clamp to the month's end (31 January
plus one month is the end of February), days move the date there too, and hours, minutes
and seconds are elapsed time. The moment found is then rounded up to the end of its day or
month when the program says so. Every ``expires_at`` is exclusive: at that instant the
points are gone.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "Duration",
    "ExpireAt",
    "ExpiryRules",
    "parse_duration",
    "parse_lifetime",
    "parse_timezone",
]

ExpireAt = Literal["exact", "end_of_day", "end_of_month"]

_UTC = ZoneInfo("UTC")
_DURATION = re.compile(
    r"P(?!$)(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)S)?)?"
)


@dataclass(frozen=True, slots=True)
class Duration:
    """An ISO 8601 duration: calendar months and days, then elapsed seconds."""

    months: int = 0
    days: int = 0
    seconds: int = 0

    def after(self, moment: datetime, zone: ZoneInfo) -> datetime:
        """``moment`` plus this duration, on the calendar of ``zone`` (months clamped)."""
        local = moment.astimezone(zone)
        if self.months:
            month_index = local.year * 12 + local.month - 1 + self.months
            year, month = divmod(month_index, 12)
            month += 1
            day = min(local.day, calendar.monthrange(year, month)[1])
            local = local.replace(year=year, month=month, day=day)
        if self.days:
            # Wall-clock days: the same time of day, whatever a DST change in between.
            local = local + timedelta(days=self.days)
        return local.astimezone(UTC) + timedelta(seconds=self.seconds)

    def __str__(self) -> str:
        years, months = divmod(self.months, 12)
        date = "".join(
            f"{n}{unit}" for n, unit in ((years, "Y"), (months, "M"), (self.days, "D")) if n
        )
        hours, rest = divmod(self.seconds, 3600)
        minutes, seconds = divmod(rest, 60)
        clock = "".join(
            f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n
        )
        if not date and not clock:
            return "PT0S"
        return f"P{date}" + (f"T{clock}" if clock else "")


def parse_duration(text: str) -> Duration:
    """An ISO 8601 duration of whole units (``P1Y``, ``P18M``, ``P90D``, ``PT30S``, ``P2W``).

    Raises ``ValueError`` naming the text for anything else (fractions, signs, empty parts).
    """
    match = _DURATION.fullmatch(text.strip().upper())
    if match is None:
        raise ValueError(
            f"{text!r} is not an ISO 8601 duration of whole units such as P1Y, P18M, P90D, PT30S"
        )
    part = {name: int(value or 0) for name, value in match.groupdict().items()}
    return Duration(
        months=part["years"] * 12 + part["months"],
        days=part["weeks"] * 7 + part["days"],
        seconds=part["hours"] * 3600 + part["minutes"] * 60 + part["seconds"],
    )


def parse_lifetime(text: str) -> Duration | None:
    """``never`` (nothing expires: ``None``) or a duration."""
    if text.strip().lower() == "never":
        return None
    return parse_duration(text)


def parse_timezone(name: str) -> ZoneInfo:
    """An IANA time zone, or ``ValueError`` naming it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{name!r} is not an IANA time zone name (such as Asia/Tokyo)") from exc


@dataclass(frozen=True, slots=True)
class ExpiryRules:
    """When earned and restored points expire, as the program's settings say."""

    lifetime: Duration | None = None
    expire_at: ExpireAt = "exact"
    zone: ZoneInfo = _UTC
    restore_grace: Duration = Duration(days=30)

    @classmethod
    def of(
        cls,
        *,
        lifetime: str = "never",
        expire_at: ExpireAt = "exact",
        timezone: str = "UTC",
        restore_grace: str = "P30D",
    ) -> ExpiryRules:
        """The rules from their settings' text (validated there already)."""
        return cls(
            parse_lifetime(lifetime),
            expire_at,
            parse_timezone(timezone),
            parse_duration(restore_grace),
        )

    def expires_at(self, start: datetime) -> datetime | None:
        """When points counted from ``start`` expire under the lifetime; ``None``: never."""
        if self.lifetime is None:
            return None
        return self.rounded(self.lifetime.after(start, self.zone))

    def earned_expiry(
        self, occurred_at: datetime, points_expire_at: datetime | None
    ) -> datetime | None:
        """A sale's lot: its own ``points_expire_at`` if it has one, else the lifetime's."""
        if points_expire_at is not None:
            return points_expire_at
        return self.expires_at(occurred_at)

    def restored_expiry(
        self, taken_from: datetime | None, *, from_a_lot: bool, applied_at: datetime
    ) -> datetime | None:
        """Points a return gives back: the expiry of the lot they came from, never sooner
        than the grace after the return; a part the burn took from no lot (the balance
        went negative) expires as if earned when the return is applied."""
        expiry = taken_from if from_a_lot else self.expires_at(applied_at)
        if expiry is None:
            return None
        return max(expiry, self.restore_grace.after(applied_at, self.zone))

    def rounded(self, moment: datetime) -> datetime:
        """``moment`` rounded up to the end of its day or month in the program's zone."""
        if self.expire_at == "exact":
            return moment
        local = moment.astimezone(self.zone)
        if self.expire_at == "end_of_day":
            start = datetime.combine(local.date() + timedelta(days=1), time(), tzinfo=self.zone)
        else:
            year, month = (
                (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
            )
            start = datetime(year, month, 1, tzinfo=self.zone)
        return start.astimezone(UTC)
