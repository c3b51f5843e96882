"""The hot route's protocol runs only on the uvicorn minor it was written against."""

from __future__ import annotations

import pytest
import uvicorn
from punchcard_coupon_query.hotroute.fence import BUILT_FOR_UVICORN, fits, http_protocol
from punchcard_coupon_query.hotroute.protocol import HotRouteProtocol
from structlog.testing import capture_logs


def test_the_installed_uvicorn_is_the_one_the_protocol_was_written_for() -> None:
    """The pin in pyproject.toml and the fence agree, so the service runs its own protocol."""
    assert fits(uvicorn.__version__)
    assert http_protocol() is HotRouteProtocol


@pytest.mark.parametrize("patch", ["0", "7", "12rc1"])
def test_any_patch_release_of_that_minor_fits(patch: str) -> None:
    """Patch releases keep the private names the protocol reads."""
    assert fits(f"{BUILT_FOR_UVICORN}.{patch}")


@pytest.mark.parametrize("version", ["0.55.0", "0.53.9", "1.54.0", "0.5", "garbage"])
def test_another_uvicorn_gets_the_stock_protocol_and_says_so(version: str) -> None:
    """A mismatched version string falls back to uvicorn's httptools protocol, with a warning."""
    with capture_logs() as logs:
        chosen = http_protocol(version)
    assert chosen == "httptools"
    assert [(e["event"], e["log_level"], e["uvicorn"]) for e in logs] == [
        ("hot_route_protocol_off", "warning", version)
    ]
