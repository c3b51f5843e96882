"""The planned fleet stream: valid contract events, keyed as the contract says, reproducible."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from random import Random
from typing import Any

import pytest
from punchcard_contract import decode_receipt, decode_return
from punchcard_platform.settings import Settings
from punchcard_returns.decisions import (
    Accepted,
    ReturnState,
    SaleLine,
    StoredSale,
    decide_return,
)
from pydantic import SecretStr

from punchcard.cli import build_parser
from punchcard.simulator import (
    DEFAULT_COUPONS,
    FleetModel,
    PlannedEvent,
    SimulationOptions,
    _default_start,
    options_from_args,
    producer_config,
)

START = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)

BUSY = SimulationOptions(
    receipts=3000,
    stores=7,
    terminals_per_store=3,
    customers=500,
    anonymous_share=0.3,
    return_share=0.2,
    repeat_return_share=0.3,
    early_return_share=0.3,
)


def plan(
    options: SimulationOptions = BUSY, seed: int = 7, run_tag: str = "r1"
) -> list[PlannedEvent]:
    assert options.receipts is not None
    return list(FleetModel(options, Random(seed), START, run_tag).plan(options.receipts))


def receipts(events: list[PlannedEvent]) -> list[PlannedEvent]:
    return [e for e in events if e.kind == "receipt"]


def returns(events: list[PlannedEvent]) -> list[PlannedEvent]:
    return [e for e in events if e.kind == "return"]


def test_every_planned_event_decodes_under_the_contract() -> None:
    """Each receipt and return passes the contract decoder unchanged."""
    for event in plan():
        if event.kind == "receipt":
            parsed = decode_receipt(event.value())
            assert parsed.event.transaction_no == event.document["transaction_no"]
        else:
            assert decode_return(event.value()).event.event_id == event.document["event_id"]


def test_the_stream_has_the_requested_receipts_and_a_mix_of_everything() -> None:
    """Members, anonymous sales, coupons, burned and earned points and returns all occur."""
    events = plan()
    sales = [e.document for e in receipts(events)]
    assert len(sales) == 3000
    assert any(s["customer_id"] is None for s in sales)
    assert any(s["customer_id"] is not None for s in sales)
    assert any(s["coupons"] for s in sales)
    assert any(s["points_used"] for s in sales)
    assert any(s["points_earned"] for s in sales)
    assert {c["coupon_id"] for s in sales for c in s["coupons"]} <= set(DEFAULT_COUPONS)
    assert 0.2 < sum(s["customer_id"] is None for s in sales) / len(sales) < 0.4


def test_anonymous_sales_earn_and_burn_no_points_and_are_keyed_by_transaction() -> None:
    """Points belong to members only; an anonymous receipt's key is its transaction_no."""
    anonymous = [e for e in receipts(plan()) if e.document["customer_id"] is None]
    assert anonymous
    for event in anonymous:
        assert event.document["points_used"] == 0
        assert event.document["points_earned"] == 0
        assert event.key == event.document["transaction_no"]


def test_member_receipts_are_keyed_by_customer_and_returns_by_transaction() -> None:
    """Keys follow CONTRACT.md section 1."""
    events = plan()
    for event in receipts(events):
        if event.document["customer_id"] is not None:
            assert event.key == event.document["customer_id"]
    for event in returns(events):
        assert event.key == event.document["transaction_no"]


def test_line_amounts_are_quantity_times_unit_price_and_totals_are_never_negative() -> None:
    """Money is exact decimal text the POS computed."""
    for event in receipts(plan()):
        for line in event.document["lines"]:
            assert Decimal(line["amount"]) == line["quantity"] * Decimal(line["unit_price"])
        assert Decimal(event.document["total"]) >= 0
        assert isinstance(event.document["total"], str)


def test_times_are_in_tokyo_time_and_event_ids_are_version_four_uuids() -> None:
    """Timestamps carry the +09:00 offset; ids are unique uuid4s."""
    events = plan()
    for event in events:
        assert event.document["occurred_at"].endswith("+09:00")
        assert event.document["schema_version"] == 1
        assert uuid.UUID(event.document["event_id"]).version == 4
    assert len({e.document["event_id"] for e in events}) == len(events)


def test_transaction_numbers_are_unique_and_carry_the_run_tag() -> None:
    """Two runs with different tags never send the same transaction_no."""
    numbers = [e.document["transaction_no"] for e in receipts(plan(run_tag="run-a"))]
    assert len(set(numbers)) == len(numbers)
    assert all("-run-a-" in n for n in numbers)
    other = {e.document["transaction_no"] for e in receipts(plan(run_tag="run-b"))}
    assert not other & set(numbers)


def test_the_same_seed_plans_the_same_stream_and_another_seed_does_not() -> None:
    """Generation is deterministic given the seed, start and run tag."""
    assert plan(seed=11) == plan(seed=11)
    assert plan(seed=11) != plan(seed=12)


def test_every_return_is_for_a_planned_sale_and_returns_follow_their_sale_in_time() -> None:
    """A return names a transaction of this run, later than its sale."""
    events = plan()
    sales = {e.document["transaction_no"]: e.document for e in receipts(events)}
    for event in returns(events):
        sale = sales[event.document["transaction_no"]]
        assert event.document["store_id"] == sale["store_id"]
        returned_at = datetime.fromisoformat(event.document["occurred_at"])
        assert returned_at > datetime.fromisoformat(sale["occurred_at"])


def test_early_returns_are_sent_before_their_sale_and_others_after() -> None:
    """Early returns precede their receipt in the stream; the rest follow it."""
    events = plan()
    position = {
        e.document["transaction_no"]: i for i, e in enumerate(events) if e.kind == "receipt"
    }
    early = [i for i, e in enumerate(events) if e.kind == "return" and e.early]
    late = [i for i, e in enumerate(events) if e.kind == "return" and not e.early]
    assert early
    assert late
    for i in early:
        assert i < position[events[i].document["transaction_no"]]
    for i in late:
        assert i > position[events[i].document["transaction_no"]]


def test_repeated_returns_come_after_the_first_return_of_the_same_transaction() -> None:
    """A repeat is a second return event (new event_id) of a sale already returned (in part)."""
    events = plan()
    first_seen: dict[str, int] = {}
    repeats = 0
    for i, event in enumerate(events):
        if event.kind != "return":
            continue
        number = event.document["transaction_no"]
        if event.repeated:
            repeats += 1
            assert number in first_seen
            assert first_seen[number] < i
        else:
            first_seen.setdefault(number, i)
    assert repeats > 0
    assert len(first_seen) == pytest.approx(0.2 * 3000, rel=0.2)


def test_no_returns_are_planned_when_the_return_share_is_zero() -> None:
    """Shares are honoured at their extremes."""
    options = SimulationOptions(receipts=500, return_share=0, anonymous_share=1)
    events = plan(options)
    assert not returns(events)
    assert all(e.document["customer_id"] is None for e in events)


def test_customer_ids_use_the_prefix_and_coupons_the_chosen_ids() -> None:
    """--customer-prefix and --coupons shape the identifiers receipts carry."""
    options = SimulationOptions(
        receipts=500, anonymous_share=0, customer_prefix="X-run9-", coupons=("ONLY-ONE",)
    )
    sales = [e.document for e in receipts(plan(options))]
    assert all(s["customer_id"].startswith("X-run9-") for s in sales)
    assert {c["coupon_id"] for s in sales for c in s["coupons"]} == {"ONLY-ONE"}
    assert all(len(s["customer_id"]) == len("X-run9-") + 6 for s in sales)


def test_no_coupons_at_all_when_the_coupon_list_is_empty() -> None:
    """An empty --coupons means receipts without coupons."""
    sales = receipts(plan(SimulationOptions(receipts=300, coupons=())))
    assert all(not e.document["coupons"] for e in sales)


@pytest.mark.parametrize(
    "overrides",
    [
        {"receipts": None, "duration": None},
        {"anonymous_share": 1.5},
        {"return_share": -0.1},
        {"stores": 0},
        {"rate": -1},
        {"coupons": ("not ok",)},
        {"customer_prefix": "C/"},
        {"run_tag": ""},
    ],
)
def test_options_refuse_values_that_cannot_make_a_valid_stream(
    overrides: dict[str, object],
) -> None:
    """Bad options fail at construction, naming the problem."""
    with pytest.raises(ValueError, match=r"must|give|not a contract"):
        SimulationOptions(**overrides)  # type: ignore[arg-type]


def test_the_command_line_becomes_options() -> None:
    """`punchcard simulate` flags map onto SimulationOptions."""
    args = build_parser().parse_args(
        [
            "simulate",
            "--rate", "0",
            "--duration", "5",
            "--stores", "3",
            "--terminals-per-store", "2",
            "--customers", "50",
            "--coupons", "A-1,B-2",
            "--anonymous-share", "0.5",
            "--return-share", "0.1",
            "--repeat-return-share", "0.2",
            "--early-return-share", "0.3",
            "--seed", "42",
            "--customer-prefix", "Z",
        ]
    )  # fmt: skip
    options = options_from_args(args)
    assert options == SimulationOptions(
        receipts=None,
        duration=5.0,
        rate=0.0,
        stores=3,
        terminals_per_store=2,
        customers=50,
        coupons=("A-1", "B-2"),
        anonymous_share=0.5,
        return_share=0.1,
        repeat_return_share=0.2,
        early_return_share=0.3,
        seed=42,
        customer_prefix="Z",
    )


def test_without_a_bound_the_command_publishes_the_default_count() -> None:
    """No --receipts and no --duration means a thousand receipts."""
    options = options_from_args(build_parser().parse_args(["simulate"]))
    assert options.receipts == 1000
    assert options.duration is None


def test_a_share_outside_zero_to_one_is_a_usage_error() -> None:
    """argparse refuses it before anything connects."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["simulate", "--return-share", "2"])


def test_the_producer_is_zstd_idempotent_acks_all_with_the_security_settings() -> None:
    """librdkafka gets the delivery guarantees and every PUNCHCARD_KAFKA_* setting."""
    settings = Settings(
        kafka_bootstrap_servers="broker-1:9093,broker-2:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="pos",
        kafka_sasl_password=SecretStr("s3cret"),
        kafka_ssl_cafile="/etc/ca.pem",  # type: ignore[arg-type]
    )
    config = producer_config(settings)
    assert config["bootstrap.servers"] == "broker-1:9093,broker-2:9093"
    assert config["compression.type"] == "zstd"
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    assert config["security.protocol"] == "sasl_ssl"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["sasl.username"] == "pos"
    assert config["sasl.password"] == "s3cret"
    assert config["ssl.ca.location"] == "/etc/ca.pem"


def test_a_plaintext_producer_carries_no_credentials() -> None:
    """Nothing about SASL or TLS is set when the settings have none."""
    config = producer_config(Settings(kafka_bootstrap_servers="localhost:9092"))
    assert config["security.protocol"] == "plaintext"
    assert not {"sasl.mechanism", "sasl.username", "sasl.password", "ssl.ca.location"} & set(config)


def replay_balances(
    events: list[PlannedEvent], *, returns_last: bool = False
) -> tuple[dict[str, int], int]:
    """Punchcard's points rules applied to a stream: the final balances and the lowest seen.

    A receipt books -points_used and +points_earned; each return (once its receipt is in)
    moves what the returns service's own rule says (whole or some lines, a repeat
    nothing). With ``returns_last`` every return is applied after every receipt, the latest
    the returns service could apply them.
    """
    ordered = (
        [e for e in events if e.kind == "receipt"] + [e for e in events if e.kind == "return"]
        if returns_last
        else events
    )
    sales: dict[str, tuple[StoredSale, ReturnState]] = {}
    waiting: dict[str, list[dict[str, Any]]] = {}
    balances: dict[str, int] = {}
    lowest = 0

    def apply_return(document: dict[str, Any]) -> None:
        nonlocal lowest
        number = document["transaction_no"]
        sale, state = sales[number]
        lines = document.get("lines")
        asked = (
            None if lines is None else tuple((x["line_no"], Decimal(x["quantity"])) for x in lines)
        )
        verdict = decide_return(sale, state, asked)
        if not isinstance(verdict, Accepted) or sale.customer_id is None:
            return
        sales[number] = (sale, verdict.state)
        balances[sale.customer_id] += verdict.points_restored - verdict.points_revoked
        lowest = min(lowest, balances[sale.customer_id])

    for event in ordered:
        document = event.document
        number = document["transaction_no"]
        if event.kind == "receipt":
            customer = document["customer_id"]
            sale = StoredSale(
                transaction_no=number,
                customer_id=customer,
                points_used=document["points_used"],
                points_earned=document["points_earned"],
                lines=tuple(
                    SaleLine(Decimal(line["quantity"]), Decimal(line["amount"]))
                    for line in document["lines"]
                ),
            )
            sales[number] = (sale, ReturnState.nothing_returned(sale))
            if customer is not None:
                assert sale.points_used <= balances.get(customer, 0), "burned points not held"
                balances[customer] = (
                    balances.get(customer, 0) - sale.points_used + sale.points_earned
                )
                lowest = min(lowest, balances[customer])
            for early in waiting.pop(number, []):
                apply_return(early)
        elif number in sales:
            apply_return(document)
        else:
            waiting.setdefault(number, []).append(document)
    return balances, lowest


def test_some_returned_sales_come_back_in_parts_with_a_return_id() -> None:
    """About half the returned sales with lines come back one or two lines at a time."""
    events = plan()
    partial = [e for e in returns(events) if e.partial]
    whole = {e.document["transaction_no"] for e in returns(events) if not e.partial}
    parted = {e.document["transaction_no"] for e in partial}
    assert partial
    assert all(e.document["return_id"] for e in partial)
    assert len(parted) == pytest.approx(len(parted | whole) / 2, rel=0.3)
    assert any(
        sum(1 for e in partial if e.document["transaction_no"] == tx and not e.repeated) > 1
        for tx in parted
    ), "some sales come back in several returns"


def test_no_member_ever_burns_more_points_than_they_hold_and_no_balance_goes_negative() -> None:
    """Replaying the stream with the contract's rules keeps every balance at zero or more."""
    for seed in (1, 7, 42):
        events = plan(seed=seed)
        balances, lowest = replay_balances(events)
        assert lowest >= 0
        assert any(e.document["points_used"] for e in receipts(events))
        assert sum(balances.values()) > 0


def test_balances_stay_non_negative_however_late_the_returns_are_applied() -> None:
    """Even with every return applied after every receipt, no balance drops below zero."""
    _, lowest = replay_balances(plan(seed=3), returns_last=True)
    assert lowest >= 0


def test_points_a_sale_earns_are_not_spent_in_that_same_sale() -> None:
    """A member's first sale burns nothing: earned points are usable from the next sale."""
    seen: set[str] = set()
    for event in receipts(plan()):
        customer = event.document["customer_id"]
        if customer is not None and customer not in seen:
            seen.add(customer)
            assert event.document["points_used"] == 0


def test_returns_happen_minutes_to_days_after_their_sale_and_repeats_after_the_first() -> None:
    """The desk sees the goods again 10 minutes to 2 days later; a repeat comes later still."""
    events = plan()
    sold_at = {
        e.document["transaction_no"]: datetime.fromisoformat(e.document["occurred_at"])
        for e in receipts(events)
    }
    first_at: dict[str, datetime] = {}
    delays = []
    for event in returns(events):
        number = event.document["transaction_no"]
        at = datetime.fromisoformat(event.document["occurred_at"])
        if event.repeated or number in first_at:
            # A later part, or the desk trying again; a refund of some lines sent again is
            # the same document (its return_id), so it keeps the first one's time.
            assert at >= first_at[number]
        else:
            first_at[number] = at
            delay = at - sold_at[number]
            assert timedelta(minutes=10) <= delay <= timedelta(days=2)
            delays.append(delay)
    delays.sort()
    assert timedelta(minutes=30) < delays[len(delays) // 2] < timedelta(hours=12)


def test_returns_are_sent_when_the_fleet_clock_reaches_them_not_right_after_the_sale() -> None:
    """A return (early ones aside) is sent once the sales' clock has passed its time."""
    events = plan()
    last_receipt = max(i for i, e in enumerate(events) if e.kind == "receipt")
    clock: datetime | None = None
    position: dict[str, int] = {}
    gaps = []
    for i, event in enumerate(events):
        at = datetime.fromisoformat(event.document["occurred_at"])
        number = event.document["transaction_no"]
        if event.kind == "receipt":
            clock = at
            position[number] = i
        elif not event.early:
            assert clock is not None
            assert at <= clock or i > last_receipt  # after the last sale: the drain
            if not event.repeated:
                gaps.append(i - position[number])
    assert sorted(gaps)[len(gaps) // 2] > 100


def test_a_run_with_the_default_start_lies_wholly_in_the_past() -> None:
    """Without an explicit start, the last sale and the last return are before now."""
    options = SimulationOptions(receipts=3000, return_share=0.2, repeat_return_share=0.5)
    now = datetime.now(UTC)
    events = list(FleetModel(options, Random(5), _default_start(options, now), "r1").plan(3000))
    latest = max(datetime.fromisoformat(e.document["occurred_at"]) for e in events)
    assert latest <= now
    assert latest > now - timedelta(days=4)
