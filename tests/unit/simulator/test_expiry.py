"""The fleet under a points lifetime: limited-time points, and burns only of points that exist."""

from __future__ import annotations

import heapq
from datetime import UTC, datetime, timedelta
from random import Random

import pytest
from punchcard_contract import decode_receipt
from punchcard_contract.program import ExpiryRules
from punchcard_platform.settings import Settings

from punchcard.cli import build_parser
from punchcard.simulator import (
    FleetModel,
    PlannedEvent,
    SimulationOptions,
    SimulationSummary,
    _default_start,
    _Tally,
    options_from_args,
    program_rules,
)

START = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)

EXPIRING = SimulationOptions(
    receipts=3000,
    stores=7,
    terminals_per_store=3,
    customers=200,
    return_share=0.2,
    limited_time_share=0.2,
    limited_time="PT20M",
)
LIFETIME = ExpiryRules.of(lifetime="PT2H")


def plan(
    options: SimulationOptions = EXPIRING,
    rules: ExpiryRules = LIFETIME,
    *,
    seed: int = 7,
    now: datetime | None = None,
) -> list[PlannedEvent]:
    assert options.receipts is not None
    model = FleetModel(options, Random(seed), START, "r1", rules, now)
    return list(model.plan(options.receipts))


def member_receipts(events: list[PlannedEvent]) -> list[dict[str, object]]:
    return [e.document for e in events if e.kind == "receipt" and e.document["customer_id"]]


def test_some_member_sales_earn_limited_time_points_that_decode_under_the_contract() -> None:
    """About the share asked for carry points_expire_at, the limited time after the sale."""
    sales = member_receipts(plan())
    limited = [s for s in sales if "points_expire_at" in s]
    assert len(limited) == pytest.approx(len(sales) * 0.2, rel=0.2)
    for sale in limited:
        occurred = datetime.fromisoformat(str(sale["occurred_at"]))
        expires = datetime.fromisoformat(str(sale["points_expire_at"]))
        assert expires - occurred == timedelta(minutes=20)
        assert decode_receipt(PlannedEvent("receipt", "k", sale).value()).event.points_expire_at
    anonymous = [e for e in plan() if e.kind == "receipt" and not e.document["customer_id"]]
    assert not any("points_expire_at" in e.document for e in anonymous)


def test_without_limited_time_points_the_stream_is_the_one_it_always_was() -> None:
    """A share of 0 draws nothing more: a seed's stream does not change."""
    options = SimulationOptions(receipts=500, customers=50)
    plain = list(FleetModel(options, Random(3), START, "r1").plan(500))
    again = list(FleetModel(options, Random(3), START, "r1", ExpiryRules()).plan(500))
    assert [e.document for e in plain] == [e.document for e in again]
    assert not any("points_expire_at" in e.document for e in plain)


def _replay_held(events: list[PlannedEvent], rules: ExpiryRules) -> tuple[int, int]:
    """Each member's lots as Punchcard keeps them (returned sales' points never counted):
    asserts no burn exceeds what is held at its sale; says how many burns and expired lots."""
    returned = {e.document["transaction_no"] for e in events if e.kind == "return"}
    lots: dict[str, list[tuple[datetime, int]]] = {}
    burns = lapsed = 0
    for event in events:
        sale = event.document
        customer = sale.get("customer_id")
        if event.kind != "receipt" or not customer:
            continue
        at = datetime.fromisoformat(sale["occurred_at"])
        held = lots.setdefault(customer, [])
        while held and held[0][0] <= at:
            heapq.heappop(held)
            lapsed += 1
        used = int(sale["points_used"])
        assert used <= sum(points for _, points in held), "burned points not held"
        burns += used > 0
        while used:
            expires, points = heapq.heappop(held)
            if points > used:
                heapq.heappush(held, (expires, points - used))
            used -= min(points, used)
        limited = sale.get("points_expire_at")
        expires_at = datetime.fromisoformat(limited) if limited else rules.expires_at(at)
        assert expires_at is not None
        if sale["transaction_no"] not in returned and sale["points_earned"]:
            heapq.heappush(held, (expires_at, int(sale["points_earned"])))
    return burns, lapsed


def test_under_a_lifetime_no_member_burns_points_that_expired_or_were_never_held() -> None:
    """Replayed with lots that lapse, every burn is covered; some burn, some lots lapse."""
    for seed in (1, 7):
        burns, lapsed = _replay_held(plan(seed=seed), LIFETIME)
        assert burns > 20
        assert lapsed > 20


def test_points_expiring_before_the_stream_is_published_are_never_burned() -> None:
    """With ``now`` after every lot's expiry, a member holds nothing to spend."""
    late = START + timedelta(days=30)
    sales = member_receipts(plan(now=late))
    assert not any(s["points_used"] for s in sales)


def test_when_points_can_expire_the_default_run_ends_its_sales_now() -> None:
    """About now: the freshest points live for their lifetime instead of expiring as they land."""
    options = SimulationOptions(receipts=3000, limited_time_share=0.1)
    now = datetime.now(UTC)
    start = _default_start(options, now, expiring=True)
    events = list(FleetModel(options, Random(5), start, "r1", LIFETIME, now).plan(3000))
    last_sale = max(
        datetime.fromisoformat(e.document["occurred_at"]) for e in events if e.kind == "receipt"
    )
    assert abs(last_sale - now) < timedelta(minutes=5)
    assert _default_start(options, now) < start - timedelta(days=2)


def test_the_command_line_takes_the_lifetime_and_the_limited_time_points() -> None:
    """--points-lifetime, --limited-time-share and --limited-time map onto the options."""
    args = build_parser().parse_args(
        [
            "simulate",
            "--points-lifetime", "PT2M",
            "--limited-time-share", "0.25",
            "--limited-time", "PT30S",
        ]
    )  # fmt: skip
    options = options_from_args(args)
    assert options.points_lifetime == "PT2M"
    assert options.limited_time_share == 0.25
    assert options.limited_time == "PT30S"


@pytest.mark.parametrize("overrides", [{"points_lifetime": "2 minutes"}, {"limited_time": "P"}])
def test_a_lifetime_that_is_not_an_iso_duration_is_refused(overrides: dict[str, str]) -> None:
    """The options name the problem before anything is published."""
    with pytest.raises(ValueError, match="ISO 8601"):
        SimulationOptions(**overrides)  # type: ignore[arg-type]


def test_the_fleet_uses_the_services_lifetime_unless_the_options_name_one() -> None:
    """PUNCHCARD_POINTS_LIFETIME by default; --points-lifetime instead when given."""
    settings = Settings(points_lifetime="P1D")
    assert program_rules(settings, SimulationOptions()).expires_at(START) == START + timedelta(
        days=1
    )
    named = SimulationOptions(points_lifetime="never")
    assert program_rules(settings, named).expires_at(START) is None


def test_the_summary_shows_the_limited_time_points() -> None:
    """They are a part of the points earned, on a line of their own."""
    summary = SimulationSummary(
        receipts=10,
        anonymous=1,
        coupon_uses=2,
        points_burned=5,
        points_earned=40,
        returns=1,
        repeated_returns=0,
        early_returns=0,
        partial_returns=0,
        resent_refunds=0,
        elapsed_seconds=1.0,
        limited_time_points=12,
    )
    assert "limited-time  12 (points_expire_at)" in summary.render()


def test_the_run_counts_the_limited_time_points_it_published() -> None:
    """The tally adds up the points_earned of the sales that carry points_expire_at."""
    events = plan()
    tally = _Tally()
    for event in events:
        tally.count(event)
    limited = sum(
        int(str(s["points_earned"])) for s in member_receipts(events) if "points_expire_at" in s
    )
    assert tally.limited_time_points == limited > 0
