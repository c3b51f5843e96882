"""What the console shows, as plain values: reasons in words, exact JSON, bytes, forms.

Nothing here does I/O; the routes fetch, these functions decide what a person reads.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from punchcard_coupon_query.eligibility import Eligibility, IneligibleReason
from punchcard_coupon_query.models import IDENTIFIER_PATTERN, CouponInput

__all__ = [
    "CouponForm",
    "CsvTargets",
    "ShownBytes",
    "coupon_form_errors",
    "format_day",
    "format_time",
    "parse_customer_csv",
    "parse_exact_json",
    "pretty_json",
    "reason_in_words",
    "show_bytes",
]

_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)


def format_day(moment: datetime) -> str:
    """A day as people write it: ``1 Dec 2026``."""
    return f"{moment.day} {moment:%b %Y}"


def format_time(moment: datetime | None) -> str:
    """A time with its offset, to the second: what a support ticket can quote."""
    if moment is None:
        return ""
    return moment.isoformat(timespec="seconds")


def reason_in_words(decision: Eligibility, *, store_id: str | None = None) -> str:
    """Why a coupon cannot be used, as the service desk says it; "" when it can be."""
    coupon = decision.coupon
    reason = decision.reason
    words = "" if reason is None else str(reason)
    if reason is IneligibleReason.INACTIVE:
        words = "deactivated"
    elif reason is IneligibleReason.NOT_STARTED and coupon.valid_from is not None:
        words = f"starts {format_day(coupon.valid_from)}"
    elif reason is IneligibleReason.EXPIRED and coupon.valid_until is not None:
        words = f"ended {format_day(coupon.valid_until)}"
    elif reason is IneligibleReason.NOT_TARGETED:
        words = "issued to other customers"
    elif reason is IneligibleReason.STORE_NOT_ALLOWED:
        words = f"not valid at store {store_id}" if store_id else "not valid at this store"
    elif reason is IneligibleReason.EXHAUSTED:
        times = "time" if coupon.uses_permitted == 1 else "times"
        words = f"used {decision.uses_made} of {coupon.uses_permitted} {times}"
    elif reason is IneligibleReason.RESERVED:
        words = f"{decision.uses_reserved} held at a checkout"
    elif reason is IneligibleReason.SOLD_OUT:
        words = f"sold out: all {coupon.total_uses_permitted} uses made or held"
    return words


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_exact_json(text: str | bytes) -> Any:
    """JSON with every number exact (``Decimal`` for fractions): money is never a float."""
    return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)


def pretty_json(value: Any, indent: int = 0) -> str:
    """``value`` (from ``parse_exact_json``) as indented JSON, numbers written as they came."""
    pad = "  " * (indent + 1)
    end = "  " * indent
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        items = [
            f"{pad}{json.dumps(k, ensure_ascii=False)}: {pretty_json(v, indent + 1)}"
            for k, v in value.items()
        ]
        return "{\n" + ",\n".join(items) + f"\n{end}}}"
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(pad + pretty_json(v, indent + 1) for v in value) + f"\n{end}]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class ShownBytes:
    """Bytes of a record as a person can read them: JSON, text, or hex."""

    kind: str
    """``json``, ``text``, ``hex`` or ``none``."""
    text: str
    size: int


def show_bytes(data: bytes | None) -> ShownBytes:
    """Pretty JSON if the bytes parse as JSON, else the text if UTF-8, else a hex dump."""
    if data is None:
        return ShownBytes("none", "(null)", 0)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        lines = [
            f"{start:08x}  {binascii.hexlify(data[start : start + 16], ' ').decode()}"
            for start in range(0, len(data), 16)
        ]
        return ShownBytes("hex", "\n".join(lines), len(data))
    try:
        return ShownBytes("json", pretty_json(parse_exact_json(text)), len(data))
    except (ValueError, RecursionError):
        return ShownBytes("text", text, len(data))


@dataclass(frozen=True, slots=True)
class CsvTargets:
    """The customer ids of an uploaded CSV, and what was wrong with it."""

    customer_ids: list[str]
    errors: list[str] = field(default_factory=list)


_MAX_CSV_ERRORS = 5
_HEADERS = frozenset({"customer_id", "customer", "customer-id", "customerid", "id"})
"""First cells taken as a header row, although they are valid identifiers too."""


def parse_customer_csv(data: bytes, *, limit: int) -> CsvTargets:
    """Customer ids from the first column of a CSV, one a row; a header row is allowed.

    Repeats count once. Invalid ids are reported by line (the first few), and nothing is
    taken from a file with any: a campaign for the wrong customers is worse than none.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return CsvTargets([], ["the file is not UTF-8 text"])
    ids: dict[str, None] = {}
    errors: list[str] = []
    bad = 0
    for number, line in enumerate(text.splitlines(), start=1):
        cell = line.split(",", 1)[0].split(";", 1)[0].strip().strip('"').strip()
        if not cell or (number == 1 and cell.lower() in _HEADERS):
            continue
        if _IDENTIFIER.fullmatch(cell):
            ids[cell] = None
        elif number == 1:
            continue  # some other header, such as "Customer ID"
        else:
            bad += 1
            if bad <= _MAX_CSV_ERRORS:
                errors.append(f"line {number}: {cell[:70]!r} is not a customer id")
    if bad > _MAX_CSV_ERRORS:
        errors.append(f"and {bad - _MAX_CSV_ERRORS} more lines like these")
    if not errors and not ids:
        errors.append("the file holds no customer ids")
    if len(ids) > limit:
        errors.append(f"{len(ids):,} customers; a coupon can be issued to {limit:,} at most")
    return CsvTargets([] if errors else list(ids), errors)


@dataclass(slots=True)
class CouponForm:
    """The coupon form's fields as typed, so a refused form comes back as it was sent."""

    coupon_id: str = ""
    name: str = ""
    description: str = ""
    uses_permitted: str = ""
    total_uses_permitted: str = ""
    valid_from: str = ""
    valid_until: str = ""
    store_ids: str = ""
    active: bool = True
    restore_on_return: bool = True
    targeting: str = "everyone"
    """``everyone``, ``csv`` (an uploaded file) or ``keep`` (the list it has)."""

    def store_list(self) -> list[str] | None:
        """Stores separated by commas, spaces or lines; None (every store) when empty."""
        stores = [s for s in re.split(r"[\s,;]+", self.store_ids) if s]
        return stores or None

    def to_input(self, customer_ids: Sequence[str] | None) -> dict[str, Any]:
        """The ``PUT /v1/coupons`` body these fields stand for, for the API's own rules."""
        return {
            "name": self.name,
            "description": self.description,
            "uses_permitted": self.uses_permitted.strip() or None,
            "valid_from": self.valid_from.strip() or None,
            "valid_until": self.valid_until.strip() or None,
            "active": self.active,
            "customer_ids": None if customer_ids is None else list(customer_ids),
            "store_ids": self.store_list(),
            "restore_on_return": self.restore_on_return,
            "total_uses_permitted": self.total_uses_permitted.strip() or None,
        }


_FIELD_OF = {"customer_ids": "targeting"}


def coupon_form_errors(
    form: CouponForm, customer_ids: Sequence[str] | None
) -> tuple[CouponInput | None, dict[str, list[str]]]:
    """The API's validation of the form: the coupon, or messages by form field.

    A message about the whole coupon (such as the validity window's order) is put by the
    field it is about.
    """
    errors: dict[str, list[str]] = {}
    if not _IDENTIFIER.fullmatch(form.coupon_id):
        errors["coupon_id"] = ["1 to 64 characters of A-Z a-z 0-9 . _ : -"]
    try:
        coupon = CouponInput.model_validate(form.to_input(customer_ids))
    except ValidationError as exc:
        for error in exc.errors():
            location = [part for part in error["loc"] if isinstance(part, str)]
            name = location[0] if location else "valid_until"
            message = str(error["msg"]).removeprefix("Value error, ")
            errors.setdefault(_FIELD_OF.get(name, name), []).append(message)
        return None, errors
    return (None if errors else coupon), errors
