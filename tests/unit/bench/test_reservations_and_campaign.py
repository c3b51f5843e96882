"""The reservation benchmark's pgbench script and the ingest's campaign-capped records."""

from __future__ import annotations

import asyncio
import json

from punchcard_platform.records import InboundRecord

from bench.ingest import _CAPPED_COUPON, _with_capped_coupon
from bench.reservations import COUPON_ID, _pgbench_script, _recorded_transaction


def _record(
    offset: int, customer_id: str | None, coupons: list[dict[str, object]]
) -> InboundRecord:
    document = {"transaction_no": f"T{offset}", "customer_id": customer_id, "coupons": coupons}
    return InboundRecord("pos.receipts.v1", 0, offset, None, json.dumps(document).encode())


def test_the_pgbench_script_replays_the_store_statements_in_one_transaction() -> None:
    """Locks, the read with the clock, the write: between BEGIN and END, no $n left."""
    script = _pgbench_script(asyncio.run(_recorded_transaction()))
    lines = script.splitlines()

    assert lines[0].startswith("\\set c random(1, ")
    assert lines[1] == "BEGIN;"
    assert lines[-1] == "END;"
    assert len(lines) == 6
    assert "pg_advisory_xact_lock" in lines[2]
    assert "clock_timestamp() AS now" in lines[3]
    assert "INSERT INTO reservations" in lines[-2]
    assert "gen_random_uuid()::text" in lines[-2]
    assert "clock_timestamp() + interval '900 seconds'" in lines[-2]
    assert f"'{COUPON_ID}'" in script
    assert "$" not in script


def test_every_second_sale_of_a_known_customer_gets_the_capped_coupon() -> None:
    """Known customers' sales alternate; anonymous sales and existing coupons are kept."""
    records = [
        _record(0, "C1", []),
        _record(1, None, []),
        _record(2, "C2", [{"coupon_id": "OTHER", "uses": 2}]),
        _record(3, "C3", [{"coupon_id": "OTHER", "uses": 1}]),
    ]

    capped, uses = _with_capped_coupon(records)
    coupons = [json.loads(r.value or b"")["coupons"] for r in capped]

    assert uses == 2
    assert coupons[0] == [{"coupon_id": _CAPPED_COUPON, "uses": 1}]
    assert coupons[1] == []
    assert coupons[2] == [{"coupon_id": "OTHER", "uses": 2}]
    assert coupons[3] == [
        {"coupon_id": "OTHER", "uses": 1},
        {"coupon_id": _CAPPED_COUPON, "uses": 1},
    ]
    assert [r.offset for r in capped] == [0, 1, 2, 3]
