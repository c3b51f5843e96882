"""Punchcard benchmarks: ``make bench`` (``python -m bench``); not collected by pytest.

Each module measures one thing against an anchor taken in the same run: ``ingest``
(receipts: set-based consumer vs raw consume vs naive consumer), ``query`` (coupon-query
at a fixed offered load vs pgbench on the same SQL), ``returns`` (returns applied per
second and publish-to-outcome latency vs the broker's own hop). Results go to
``bench-results/results.json`` with PNG plots beside it.
"""
