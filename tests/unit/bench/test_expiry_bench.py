"""The expiry benchmark's pure parts: when its lots are due, how it names and splits statements."""

from __future__ import annotations

from datetime import UTC, datetime

from bench.expiry import _label, _per_fifth, _start_of_month


def test_lots_come_due_at_the_end_of_last_month_which_has_passed() -> None:
    """The fixture's moment is the first instant of this month: already past, a month's end."""
    now = datetime(2026, 12, 3, 13, 45, 7, 123, tzinfo=UTC)
    due = _start_of_month(now)
    assert due == datetime(2026, 12, 1, tzinfo=UTC)
    assert due <= now


def test_a_statement_is_labelled_by_its_first_words_and_the_tables_it_names() -> None:
    """Whitespace is folded and every table after FROM, INTO, UPDATE or JOIN is listed once."""
    query = """
        UPDATE points_lots AS l SET remaining = c.remaining
        FROM unnest($1::bigint[]) AS c(id, remaining)
        WHERE l.id = c.id
    """
    assert _label(query) == "UPDATE points_lots AS ... [points_lots, unnest]"
    assert _label("SELECT clock_timestamp()") == "SELECT clock_timestamp()"


def test_each_statement_gets_its_seconds_in_each_fifth_of_the_transactions() -> None:
    """Ten transactions make fifths of two; a statement absent from one counts zero there."""
    rounds = [{"all": 1.0, "a": 0.5} for _ in range(8)] + [{"all": 2.0}, {"all": 2.0, "b": 1.0}]
    fifths = _per_fifth(rounds)
    assert fifths["all"] == [2.0, 2.0, 2.0, 2.0, 4.0]
    assert fifths["a"] == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert fifths["b"] == [0.0, 0.0, 0.0, 0.0, 1.0]
