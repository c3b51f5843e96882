"""Publish the contract as files integrators can read: JSON Schemas and an AsyncAPI document.

``python -m punchcard_contract.schemas`` writes them into ``./schemas`` (run it from the
repository root); ``--check`` only compares and exits 1 when the files are stale, so CI can
tell when a model changed without its published schema.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from punchcard_contract.errors import MAX_DETAIL_BYTES, DeadLetterReason
from punchcard_contract.events import (
    CouponUsageEvent,
    PointsEvent,
    ReceiptEvent,
    ReturnEvent,
    ReturnOutcomeEvent,
)

__all__ = ["SCHEMA_FILES", "main", "render_schemas", "stale_schemas", "write_schemas"]

_JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Input events are described as they may be sent (validation); output events as they are
# written (serialization), where fields with defaults are always present.
_MODELS: dict[str, tuple[type[BaseModel], Literal["validation", "serialization"]]] = {
    "receipt-event": (ReceiptEvent, "validation"),
    "return-event": (ReturnEvent, "validation"),
    "coupon-usage-event": (CouponUsageEvent, "serialization"),
    "points-event": (PointsEvent, "serialization"),
    "return-outcome-event": (ReturnOutcomeEvent, "serialization"),
}

SCHEMA_FILES: tuple[str, ...] = (
    *(f"{name}.schema.json" for name in _MODELS),
    "asyncapi.json",
)


def _json_schema(model: type[BaseModel], mode: Literal["validation", "serialization"]) -> Any:
    return {"$schema": _JSON_SCHEMA_DIALECT, **model.model_json_schema(mode=mode)}


def _kafka_key(description: str) -> dict[str, Any]:
    return {"kafka": {"key": {"type": "string", "description": description}}}


def _message(name: str, summary: str, key: str) -> dict[str, Any]:
    return {
        "name": name,
        "summary": summary,
        "contentType": "application/json",
        "payload": {"$ref": f"./{_file_of(name)}"},
        "bindings": _kafka_key(key),
    }


def _file_of(model_name: str) -> str:
    for name, (model, _) in _MODELS.items():
        if model.__name__ == model_name:
            return f"{name}.schema.json"
    raise KeyError(model_name)


def _dead_letter_message(source: str) -> dict[str, Any]:
    def header(description: str, **schema: Any) -> dict[str, Any]:
        return {"type": "string", "description": description, **schema}

    return {
        "name": "DeadLetter",
        "summary": f"A record of {source} that could not be applied, key and bytes unchanged.",
        "contentType": "application/octet-stream",
        "headers": {
            "type": "object",
            "required": [
                "punchcard.error.reason",
                "punchcard.error.detail",
                "punchcard.source.topic",
                "punchcard.source.partition",
                "punchcard.source.offset",
            ],
            "properties": {
                "punchcard.error.reason": header(
                    "Why the record was refused.",
                    enum=[reason.value for reason in DeadLetterReason],
                ),
                "punchcard.error.detail": header(
                    f"Readable explanation, at most {MAX_DETAIL_BYTES} bytes of UTF-8."
                ),
                "punchcard.source.topic": header("The topic the record was read from."),
                "punchcard.source.partition": header(
                    "The record's partition, as decimal text.", pattern="^[0-9]+$"
                ),
                "punchcard.source.offset": header(
                    "The record's offset, as decimal text.", pattern="^[0-9]+$"
                ),
            },
        },
        "payload": {"description": "The original record value, byte for byte."},
        "bindings": _kafka_key("The original record key, unchanged."),
    }


def _asyncapi() -> dict[str, Any]:
    anyone = "customer_id"
    messages = {
        "ReceiptEvent": _message(
            "ReceiptEvent",
            "A sale.",
            "customer_id, or transaction_no for an anonymous sale (UTF-8).",
        ),
        "ReturnEvent": _message(
            "ReturnEvent", "A return of a whole transaction.", "transaction_no"
        ),
        "CouponUsageEvent": _message(
            "CouponUsageEvent", "A customer's count of a coupon changed.", anyone
        ),
        "PointsEvent": _message("PointsEvent", "A customer's points balance changed.", anyone),
        "ReturnOutcomeEvent": _message(
            "ReturnOutcomeEvent", "What became of a return.", "transaction_no"
        ),
        "ReceiptDeadLetter": _dead_letter_message("pos.receipts.v1"),
        "ReturnDeadLetter": _dead_letter_message("pos.returns.v1"),
    }
    channels: dict[str, dict[str, Any]] = {}
    operations: dict[str, dict[str, Any]] = {}
    for channel, address, message, action in (
        ("receipts", "pos.receipts.v1", "ReceiptEvent", "receive"),
        ("returns", "pos.returns.v1", "ReturnEvent", "receive"),
        ("couponUsage", "punchcard.coupon-usage.v1", "CouponUsageEvent", "send"),
        ("points", "punchcard.points.v1", "PointsEvent", "send"),
        ("returnOutcomes", "punchcard.return-outcomes.v1", "ReturnOutcomeEvent", "send"),
        ("receiptsDeadLetters", "pos.receipts.v1.dlq", "ReceiptDeadLetter", "send"),
        ("returnsDeadLetters", "pos.returns.v1.dlq", "ReturnDeadLetter", "send"),
    ):
        channels[channel] = {
            "address": address,
            "messages": {message: {"$ref": f"#/components/messages/{message}"}},
        }
        operations[f"{action}{channel[0].upper()}{channel[1:]}"] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [{"$ref": f"#/channels/{channel}/messages/{message}"}],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Punchcard",
            "version": "1.0.0",
            "description": (
                "Electronic receipts, per-customer coupon limits and loyalty points over Kafka."
                " Every topic name can be overridden by configuration; the addresses here are"
                " the defaults. Output events are published at least once: drop repeats by"
                " event_id."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def _dumps(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def render_schemas() -> dict[str, str]:
    """The published files by name, as text, exactly as the models describe them today."""
    files = {
        f"{name}.schema.json": _dumps(_json_schema(model, mode))
        for name, (model, mode) in _MODELS.items()
    }
    files["asyncapi.json"] = _dumps(_asyncapi())
    return files


def write_schemas(directory: Path) -> list[Path]:
    """Write every published file into ``directory`` and return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale_schemas(directory: Path) -> list[str]:
    """Names of the files in ``directory`` that are missing or differ from the models."""
    stale = []
    for name, text in render_schemas().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m punchcard_contract.schemas [--check] [--directory DIR]``."""
    parser = argparse.ArgumentParser(
        prog="python -m punchcard_contract.schemas", description=__doc__
    )
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if stale")
    parser.add_argument("--directory", type=Path, default=Path("schemas"))
    arguments = parser.parse_args(argv)
    directory: Path = arguments.directory
    if arguments.check:
        stale = stale_schemas(directory)
        for name in stale:
            print(f"{directory / name} is stale; regenerate it", file=sys.stderr)
        return 1 if stale else 0
    for path in write_schemas(directory):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
