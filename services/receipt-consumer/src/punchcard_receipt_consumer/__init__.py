"""The receipt consumer: stores e-receipts, counts coupon uses, books points.

``handler`` takes records in, ``booking`` decides, ``store`` holds the SQL, ``service``
runs it.
"""
