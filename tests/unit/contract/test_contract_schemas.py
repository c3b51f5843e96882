"""The published schemas in schemas/ are what the models say today."""

from __future__ import annotations

import json
from pathlib import Path

from punchcard_contract.schemas import SCHEMA_FILES, main, render_schemas, stale_schemas

REPOSITORY = Path(__file__).resolve().parents[3]


def test_the_committed_schema_files_match_the_models() -> None:
    """Regenerate with `uv run python -m punchcard_contract.schemas` when this fails."""
    assert stale_schemas(REPOSITORY / "schemas") == []


def test_the_check_fails_when_a_file_is_missing_or_changed(tmp_path: Path) -> None:
    """--check exits 1 for stale files and 0 once they are written."""
    assert main(["--check", "--directory", str(tmp_path)]) == 1
    assert main(["--directory", str(tmp_path)]) == 0
    assert main(["--check", "--directory", str(tmp_path)]) == 0
    (tmp_path / "points-event.schema.json").write_text("{}\n", encoding="utf-8")
    assert stale_schemas(tmp_path) == ["points-event.schema.json"]


def test_every_published_file_is_json() -> None:
    """Each file parses as JSON, and the set of files is the one documented."""
    rendered = render_schemas()
    assert tuple(rendered) == SCHEMA_FILES
    for text in rendered.values():
        json.loads(text)


def test_the_asyncapi_document_has_a_channel_for_each_contract_topic() -> None:
    """The seven topics of CONTRACT.md section 1 are channels, with their payloads."""
    document = json.loads(render_schemas()["asyncapi.json"])
    assert document["asyncapi"] == "3.0.0"
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == {
        "pos.receipts.v1",
        "pos.returns.v1",
        "punchcard.coupon-usage.v1",
        "punchcard.points.v1",
        "punchcard.return-outcomes.v1",
        "pos.receipts.v1.dlq",
        "pos.returns.v1.dlq",
    }
    messages = document["components"]["messages"]
    assert messages["ReceiptEvent"]["payload"] == {"$ref": "./receipt-event.schema.json"}
    assert set(messages["ReceiptDeadLetter"]["headers"]["properties"]) == {
        "punchcard.error.reason",
        "punchcard.error.detail",
        "punchcard.source.topic",
        "punchcard.source.partition",
        "punchcard.source.offset",
    }


def test_output_event_schemas_require_every_field() -> None:
    """Every field of an output event is always written, so the schema requires it."""
    schema = json.loads(render_schemas()["return-outcome-event.schema.json"])
    assert set(schema["required"]) == set(schema["properties"])
