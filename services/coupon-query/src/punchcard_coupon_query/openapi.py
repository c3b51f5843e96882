"""Export the OpenAPI document into the repository, or check that the exported one is current.

    python -m punchcard_coupon_query.openapi            # write services/coupon-query/openapi.json
    python -m punchcard_coupon_query.openapi --check    # exit 1 if it differs from the code

Integrators read the committed file; the check (run by the tests) keeps it honest.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from punchcard_platform.db import Database
from punchcard_platform.settings import Settings

from punchcard_coupon_query.app import create_app

__all__ = ["EXPORTED_PATH", "main", "openapi_document", "render"]

EXPORTED_PATH = Path(__file__).resolve().parents[2] / "openapi.json"


class _NoDatabase(Database):
    """Stands in for the pool: building the document never queries."""

    def __init__(self) -> None:
        pass


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document the service serves at /openapi.json."""
    return create_app(Settings(), _NoDatabase()).openapi()


def render() -> str:
    """The document as the exported file holds it: stable key order, trailing newline."""
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the document, or with ``--check`` report whether the written one is current."""
    parser = argparse.ArgumentParser(prog="python -m punchcard_coupon_query.openapi")
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    parser.add_argument("--output", type=Path, default=EXPORTED_PATH)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            sys.stderr.write(
                f"{args.output} is out of date: run python -m punchcard_coupon_query.openapi\n"
            )
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
