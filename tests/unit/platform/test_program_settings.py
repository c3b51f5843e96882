"""The program's settings are read once at the edge: a value that cannot work stops start-up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from punchcard_platform.settings import Settings
from pydantic import ValidationError


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("points_lifetime", "forever"),
        ("points_restore_grace", "30 days"),
        ("program_timezone", "Mars/Olympus"),
        ("points_expire_at", "end_of_week"),
        ("points_expiry_check_seconds", 0),
    ],
)
def test_a_program_setting_that_cannot_be_read_is_refused_naming_it(
    name: str, value: object
) -> None:
    """The error names the setting, so the operator knows which variable to fix."""
    with pytest.raises(ValidationError, match=name):
        Settings(**{name: value})  # type: ignore[arg-type]


def test_the_rules_come_from_the_settings() -> None:
    """A lifetime, a rounding and a zone make one set of rules every service shares."""
    settings = Settings(
        points_lifetime="P90D", points_expire_at="end_of_day", program_timezone="Asia/Tokyo"
    )
    rules = settings.expiry_rules
    sale = datetime(2027, 1, 1, 3, tzinfo=UTC)  # 12:00 in Tokyo
    expiry = rules.expires_at(sale)
    assert expiry is not None
    assert expiry == datetime(2027, 4, 1, 15, tzinfo=UTC)  # 2 Apr 00:00 in Tokyo
    assert Settings().expiry_rules.expires_at(sale) is None
    assert Settings().expiry_rules.restore_grace.after(sale, rules.zone) == sale + timedelta(
        days=30
    )
