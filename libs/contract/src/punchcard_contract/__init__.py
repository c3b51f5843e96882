"""Punchcard's external contract: the events on its topics, and how inbound bytes are read.

See CONTRACT.md sections 1 to 4. Services import from here, never from the submodules.
"""

from punchcard_contract.decoding import (
    MAX_VALUE_BYTES,
    ParsedReceipt,
    ParsedReturn,
    decode_receipt,
    decode_return,
    receipt_fingerprint,
)
from punchcard_contract.errors import (
    MAX_DETAIL_BYTES,
    DeadLetterReason,
    InvalidEventError,
    truncate_detail,
)
from punchcard_contract.events import (
    EVENT_NAMESPACE,
    MAX_COUPON_USES,
    MAX_COUPONS,
    MAX_LINES,
    MAX_POINTS,
    CouponRestored,
    CouponUsageEvent,
    CouponUse,
    PointsEvent,
    ReceiptEvent,
    ReceiptLine,
    ReturnEvent,
    ReturnOutcomeEvent,
    event_id_for,
    event_id_text,
    json_time,
)
from punchcard_contract.inbound import InboundCoupon, InboundLine, InboundReceipt, InboundReturn
from punchcard_contract.values import Identifier, Money, Quantity, Timestamp, parse_decimal

__all__ = [
    "EVENT_NAMESPACE",
    "MAX_COUPONS",
    "MAX_COUPON_USES",
    "MAX_DETAIL_BYTES",
    "MAX_LINES",
    "MAX_POINTS",
    "MAX_VALUE_BYTES",
    "CouponRestored",
    "CouponUsageEvent",
    "CouponUse",
    "DeadLetterReason",
    "Identifier",
    "InboundCoupon",
    "InboundLine",
    "InboundReceipt",
    "InboundReturn",
    "InvalidEventError",
    "Money",
    "ParsedReceipt",
    "ParsedReturn",
    "PointsEvent",
    "Quantity",
    "ReceiptEvent",
    "ReceiptLine",
    "ReturnEvent",
    "ReturnOutcomeEvent",
    "Timestamp",
    "decode_receipt",
    "decode_return",
    "event_id_for",
    "event_id_text",
    "json_time",
    "parse_decimal",
    "receipt_fingerprint",
    "truncate_detail",
]
