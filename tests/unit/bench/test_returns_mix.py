"""The returns benchmark's workload: half partial returns, half whole, all acceptable."""

from __future__ import annotations

from decimal import Decimal

import orjson
from punchcard_contract import decode_return

from bench.returns import _return_documents, _Sale


def _sale(number: int, lines: int) -> _Sale:
    return _Sale(
        {
            "transaction_no": f"S0001-T01-20261203-{number:06d}",
            "store_id": "S0001",
            "occurred_at": "2026-12-03T09:00:00+09:00",
            "lines": [{"quantity": 1}] * lines,
        }
    )


def test_every_second_return_names_one_or_two_lines_of_its_sale() -> None:
    """Even positions name lines (alternately one and two) under a return_id; odd ones none."""
    sales = [_sale(n, 1 + n % 5) for n in range(40)]
    documents = _return_documents(sales)
    partial = [d for d in documents if "lines" in d]
    assert len(partial) == len(documents) // 2
    for index, (sale, document) in enumerate(zip(sales, documents, strict=True)):
        if index % 2:
            assert "lines" not in document
            assert "return_id" not in document
            continue
        named = [line["line_no"] for line in document["lines"]]
        assert len(named) == min(sale.line_count, 1 + index % 4 // 2)
        assert len(set(named)) == len(named)
        assert all(1 <= n <= sale.line_count for n in named)


def test_the_workload_decodes_as_valid_return_events() -> None:
    """Every generated return passes the contract's decoder, quantities read exactly."""
    for document in _return_documents([_sale(n, 3) for n in range(8)]):
        parsed = decode_return(orjson.dumps(document))
        assert parsed.event.transaction_no == document["transaction_no"]
        if "lines" in document:
            assert all(line.quantity == Decimal(1) for line in parsed.event.lines or ())
