"""Turn the bytes of an inbound Kafka record into a validated event, or say why not.

Checks run in the order of CONTRACT.md sections 2 and 4, and the first failure decides the
dead-letter reason: too large, then not JSON, then the wrong ``schema_version``, then any
other rule of the schema.

Two paths, one verdict. Every record first takes the cheap path: msgspec decodes the bytes
straight into ``InboundReceipt`` (or ``InboundReturn``) and a few lines of Python check what
msgspec cannot express. That path only ever *accepts*, and only what the contract surely
allows; anything it is unsure of (a refusal, an escape sequence, a rare spelling of a time)
goes to the exact path: the standard JSON parser and the pydantic models of ``events``,
which decide whether the record is valid and word every dead-letter detail. So a valid
record costs a few microseconds, and a refused one is refused exactly as before.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, NoReturn, TypeVar

import msgspec
from pydantic import BaseModel, ValidationError

from punchcard_contract.errors import DeadLetterReason, InvalidEventError
from punchcard_contract.events import ReceiptEvent, ReturnEvent
from punchcard_contract.inbound import (
    InboundCoupon,
    InboundLine,
    InboundReceipt,
    InboundReturn,
    InboundReturnLine,
)

__all__ = [
    "MAX_VALUE_BYTES",
    "ParsedReceipt",
    "ParsedReturn",
    "content_fingerprint",
    "decode_receipt",
    "decode_receipt_exactly",
    "decode_return",
    "decode_return_exactly",
]

MAX_VALUE_BYTES = 1024 * 1024
"""A value over 1 MiB is ``payload_too_large`` (CONTRACT.md section 2)."""

_M = TypeVar("_M", bound=BaseModel)
_MAX_ERRORS_SHOWN = 20
_MAX_INPUT_SHOWN = 80


@dataclass(frozen=True, slots=True)
class ParsedReceipt:
    """A valid receipt, the JSON text exactly as sent, and its content fingerprint.

    ``fingerprint`` tells a redelivery (same content, any ``event_id``) from a
    ``conflicting_duplicate`` (same ``transaction_no``, different content).
    """

    event: InboundReceipt
    document: str
    fingerprint: bytes


@dataclass(frozen=True, slots=True)
class ParsedReturn:
    """A valid return, the JSON text exactly as sent, and its content fingerprint.

    ``fingerprint`` (of the content, ``event_id`` aside) tells a redelivered ``return_id``
    from a conflicting one; a return without ``return_id`` has none.
    """

    event: InboundReturn
    document: str
    fingerprint: bytes | None = None


def decode_receipt(value: bytes | None) -> ParsedReceipt:
    """Decode a ``pos.receipts.v1`` value, raising ``InvalidEventError`` to dead-letter it."""
    fast = _fast_receipt(value)
    return fast if fast is not None else decode_receipt_exactly(value)


def decode_receipt_exactly(value: bytes | None) -> ParsedReceipt:
    """``decode_receipt`` on the exact path only: the arbiter the cheap path is tested against."""
    document, parsed = _parse(value)
    model = _validate(ReceiptEvent, parsed)
    return ParsedReceipt(
        event=_receipt_from_model(model),
        document=document,
        fingerprint=content_fingerprint(document),
    )


def decode_return(value: bytes | None) -> ParsedReturn:
    """Decode a ``pos.returns.v1`` value, raising ``InvalidEventError`` to dead-letter it."""
    fast = _fast_return(value)
    return fast if fast is not None else decode_return_exactly(value)


def decode_return_exactly(value: bytes | None) -> ParsedReturn:
    """``decode_return`` on the exact path only: the arbiter the cheap path is tested against."""
    document, parsed = _parse(value)
    model = _validate(ReturnEvent, parsed)
    event = InboundReturn(
        schema_version=1,
        event_id=model.event_id,
        transaction_no=model.transaction_no,
        store_id=model.store_id,
        terminal_id=model.terminal_id,
        occurred_at=model.occurred_at,
        reason=model.reason,
        return_id=model.return_id,
        lines=None
        if model.lines is None
        else [
            InboundReturnLine(line_no=line.line_no, quantity=line.quantity) for line in model.lines
        ],
    )
    return _parsed_return(event, document)


def _parsed_return(event: InboundReturn, document: str) -> ParsedReturn:
    fingerprint = None if event.return_id is None else content_fingerprint(document)
    return ParsedReturn(event=event, document=document, fingerprint=fingerprint)


# The cheap path. Each function returns None where the exact path must decide.

_RECEIPT_DECODER = msgspec.json.Decoder(InboundReceipt, float_hook=Decimal)
_RETURN_DECODER = msgspec.json.Decoder(InboundReturn)
_CONTENT_DECODER = msgspec.json.Decoder(float_hook=lambda text: "\x00" + text)
_CANONICAL = msgspec.json.Encoder(order="sorted")
_DECIMAL_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_MAX_EXPONENT = 1000
_MAX_DIGITS = 1000
_COMMON_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
# Python's json refuses integers of over 4300 digits and nesting deeper than its recursion
# limit; msgspec reads both. Such values are left to the exact path.
_LONG_INTEGER = re.compile(rb"[0-9]{4300}")
_DEEP_NESTING = 900
# Prices repeat across receipts; a Decimal is immutable, so one read serves them all.
_MONEY_CACHE: dict[object, Decimal] = {}
_MONEY_CACHE_SIZE = 50_000


def _fast_receipt(value: bytes | None) -> ParsedReceipt | None:
    if value is None or not _plain(value):
        return None
    try:
        document = value.decode("utf-8")
        event = _RECEIPT_DECODER.decode(value)
        content = _CONTENT_DECODER.decode(value)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    if not _settle_receipt(event) or type(content) is not dict:
        return None
    content.pop("event_id", None)
    fingerprint = hashlib.sha256(_CANONICAL.encode(content)).digest()
    return ParsedReceipt(event=event, document=document, fingerprint=fingerprint)


def _settle_receipt(event: InboundReceipt) -> bool:
    """Check what msgspec could not, and read the money and the time in place."""
    version = event.schema_version
    if type(version) is not int or version != 1:
        return False
    if event.customer_id is None and (event.points_used or event.points_earned):
        return False
    occurred_at = _common_time(event.occurred_at)
    total = _money(event.total)
    if occurred_at is None or total is None:
        return False
    if event.points_expire_at is not None:
        points_expire_at = _common_time(event.points_expire_at)
        if points_expire_at is None:
            return False
        event.points_expire_at = points_expire_at
    for line in event.lines:
        quantity = _money(line.quantity)
        unit_price = _money(line.unit_price)
        amount = _money(line.amount)
        if quantity is None or quantity <= 0 or unit_price is None or amount is None:
            return False
        line.quantity, line.unit_price, line.amount = quantity, unit_price, amount
    event.occurred_at = occurred_at
    event.total = total
    return True


def _fast_return(value: bytes | None) -> ParsedReturn | None:
    if value is None or not _plain(value):
        return None
    try:
        document = value.decode("utf-8")
        event = _RETURN_DECODER.decode(value)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    version = event.schema_version
    if type(version) is not int or version != 1:
        return None
    occurred_at = _common_time(event.occurred_at)
    if occurred_at is None:
        return None
    if event.lines is not None and not _settle_return_lines(event):
        return None
    event.occurred_at = occurred_at
    return _parsed_return(event, document)


def _settle_return_lines(event: InboundReturn) -> bool:
    """Check what msgspec could not of a return's lines, and read the quantities in place."""
    assert event.lines is not None
    if event.return_id is None:
        return False
    seen: set[int] = set()
    for line in event.lines:
        quantity = _money(line.quantity)
        if quantity is None or quantity <= 0 or line.line_no in seen:
            return False
        seen.add(line.line_no)
        line.quantity = quantity
    return True


def _plain(value: bytes) -> bool:
    """Whether the cheap path may look at ``value`` at all.

    An escape sequence may hide text PostgreSQL cannot store (checked on the exact path).
    """
    if len(value) > MAX_VALUE_BYTES or b"\\u" in value:
        return False
    if len(value) > 2 * _DEEP_NESTING and value.count(b"[") + value.count(b"{") > _DEEP_NESTING:
        return False
    return not (len(value) > 4300 and _LONG_INTEGER.search(value))


def _common_time(value: object) -> datetime | None:
    if type(value) is not str or not _COMMON_TIME.fullmatch(value):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _money(value: object) -> Decimal | None:
    """``parse_decimal``'s rules, answering None instead of raising."""
    kind = type(value)
    if kind is str or kind is int:
        known = _MONEY_CACHE.get((kind, value))
        if known is not None:
            return known
    result = _read_money(value, kind)
    if result is not None and kind is not Decimal:
        if len(_MONEY_CACHE) >= _MONEY_CACHE_SIZE:
            _MONEY_CACHE.clear()
        _MONEY_CACHE[(kind, value)] = result
    return result


def _read_money(value: object, kind: type) -> Decimal | None:
    if kind is str:
        assert isinstance(value, str)
        if not _DECIMAL_TEXT.fullmatch(value):
            return None
        result = Decimal(value)
    elif kind is Decimal:
        assert isinstance(value, Decimal)
        result = value
    elif kind is int:
        assert isinstance(value, int)
        result = Decimal(value)
    else:
        return None
    if not result.is_finite():
        return None
    _, digits, exponent = result.as_tuple()
    if not isinstance(exponent, int) or abs(exponent) > _MAX_EXPONENT:
        return None
    if len(digits) > _MAX_DIGITS:
        return None
    return result


def _receipt_from_model(model: ReceiptEvent) -> InboundReceipt:
    """The exact path's verdict in the shape the cheap path gives."""
    return InboundReceipt(
        schema_version=1,
        event_id=model.event_id,
        transaction_no=model.transaction_no,
        store_id=model.store_id,
        terminal_id=model.terminal_id,
        customer_id=model.customer_id,
        occurred_at=model.occurred_at,
        currency=model.currency,
        total=model.total,
        lines=[
            InboundLine(
                sku=line.sku,
                description=line.description,
                quantity=line.quantity,
                unit_price=line.unit_price,
                amount=line.amount,
            )
            for line in model.lines
        ],
        coupons=[
            InboundCoupon(
                coupon_id=coupon.coupon_id, uses=coupon.uses, reservation_id=coupon.reservation_id
            )
            for coupon in model.coupons
        ],
        points_used=model.points_used,
        points_earned=model.points_earned,
        points_expire_at=model.points_expire_at,
    )


# The exact path.


def content_fingerprint(document: str) -> bytes:
    """SHA-256 of an event's content, ``event_id`` aside: a receipt's, or a return's.

    Keys are sorted and whitespace dropped, so re-serialising the same content gives the same
    fingerprint; numbers with a fraction or exponent keep their text exactly as sent, marked so
    that ``150.0`` (a number) never equals ``"150.0"`` (a string). The mark is a NUL, which
    decoding refuses in any accepted text. This runs on every receipt, so it leans on the C
    JSON codec rather than walking the document in Python.
    """
    content = json.loads(document, parse_float=_marked_number)
    content.pop("event_id", None)
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).digest()


def _marked_number(text: str) -> str:
    return "\x00" + text


def _parse(value: bytes | None) -> tuple[str, dict[str, Any]]:
    if value is not None and len(value) > MAX_VALUE_BYTES:
        _fail(
            DeadLetterReason.PAYLOAD_TOO_LARGE,
            f"value is {len(value)} bytes; the limit is {MAX_VALUE_BYTES}",
        )
    if value is None:
        _fail(DeadLetterReason.INVALID_JSON, "record has no value (a tombstone)")
    try:
        document = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        _fail(DeadLetterReason.INVALID_JSON, f"value is not UTF-8: {exc}", exc)
    try:
        parsed = json.loads(document, parse_float=Decimal, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError is a ValueError, as are NaN/Infinity and over-long integers.
        _fail(DeadLetterReason.INVALID_JSON, f"value is not JSON: {exc}", exc)
    if not isinstance(parsed, dict):
        _fail(
            DeadLetterReason.INVALID_JSON,
            f"value is JSON {type(parsed).__name__}, not an object",
        )
    if "\\u" in document:
        # Only escapes can smuggle in text that PostgreSQL cannot store (or is not Unicode).
        _refuse_unstorable_text(parsed)
    if "schema_version" in parsed:
        version = parsed["schema_version"]
        if type(version) is not int or version != 1:
            _fail(
                DeadLetterReason.UNSUPPORTED_SCHEMA_VERSION,
                f"schema_version {_shown(version)} is not supported; this reader takes 1",
            )
    return document, parsed


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _refuse_unstorable_text(parsed: dict[str, Any]) -> None:
    pending: list[object] = [parsed]
    while pending:
        item = pending.pop()
        texts: list[str] = []
        if isinstance(item, dict):
            texts.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str):
            texts.append(item)
        for text in texts:
            if "\x00" in text:
                _fail(DeadLetterReason.INVALID_JSON, "text contains \\u0000, which is not storable")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                _fail(DeadLetterReason.INVALID_JSON, "text contains a lone UTF-16 surrogate", exc)


def _validate(model: type[_M], parsed: dict[str, Any]) -> _M:
    try:
        return model.model_validate(parsed)
    except ValidationError as exc:
        _fail(DeadLetterReason.SCHEMA_VIOLATION, _describe(exc), exc)


def _describe(error: ValidationError) -> str:
    """List each failing field path with its message, e.g. ``lines.0.quantity: ...``."""
    problems = []
    for detail in error.errors(include_url=False)[:_MAX_ERRORS_SHOWN]:
        path = ".".join(str(part) for part in detail["loc"]) or "(event)"
        problem = f"{path}: {detail['msg'].removeprefix('Value error, ')}"
        if detail["type"] != "missing" and not isinstance(detail["input"], dict | list):
            problem += f" (got {_shown(detail['input'])})"
        problems.append(problem)
    more = error.error_count() - _MAX_ERRORS_SHOWN
    if more > 0:
        problems.append(f"and {more} more")
    return "; ".join(problems)


def _shown(value: object) -> str:
    if isinstance(value, Decimal):
        text = str(value)
    elif isinstance(value, dict | list):
        text = "an object" if isinstance(value, dict) else "an array"
    else:
        text = json.dumps(value, ensure_ascii=False)
    if len(text) > _MAX_INPUT_SHOWN:
        text = text[:_MAX_INPUT_SHOWN] + "…"
    return text


def _fail(reason: DeadLetterReason, detail: str, cause: BaseException | None = None) -> NoReturn:
    raise InvalidEventError(reason, detail) from cause
