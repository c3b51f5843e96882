"""Turn the bytes of an inbound Kafka record into a validated event, or say why not.

Checks run in the order of CONTRACT.md sections 2 and 4, and the first failure decides the
dead-letter reason: too large, then not JSON, then the wrong ``schema_version``, then any
other rule of the schema.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError

from punchcard_contract.errors import DeadLetterReason, InvalidEventError
from punchcard_contract.events import ReceiptEvent, ReturnEvent

__all__ = [
    "MAX_VALUE_BYTES",
    "ParsedReceipt",
    "ParsedReturn",
    "decode_receipt",
    "decode_return",
    "receipt_fingerprint",
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

    event: ReceiptEvent
    document: str
    fingerprint: bytes


@dataclass(frozen=True, slots=True)
class ParsedReturn:
    """A valid return and the JSON text exactly as sent."""

    event: ReturnEvent
    document: str


def decode_receipt(value: bytes | None) -> ParsedReceipt:
    """Decode a ``pos.receipts.v1`` value, raising ``InvalidEventError`` to dead-letter it."""
    document, parsed = _parse(value)
    event = _validate(ReceiptEvent, parsed)
    return ParsedReceipt(event=event, document=document, fingerprint=receipt_fingerprint(document))


def decode_return(value: bytes | None) -> ParsedReturn:
    """Decode a ``pos.returns.v1`` value, raising ``InvalidEventError`` to dead-letter it."""
    document, parsed = _parse(value)
    return ParsedReturn(event=_validate(ReturnEvent, parsed), document=document)


def receipt_fingerprint(document: str) -> bytes:
    """SHA-256 of a receipt's content, ``event_id`` aside.

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
