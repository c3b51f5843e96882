"""Which HTTP protocol uvicorn runs: ``HotRouteProtocol`` only on the uvicorn it was built for.

``protocol.HotRouteProtocol`` subclasses uvicorn's httptools protocol, copies its scope
building and reads a dozen of its private attributes: a bet on one release. The project
pins that minor (``pyproject.toml``); if another is installed anyway (a loosened pin, a
platform's own package), the service runs uvicorn's stock protocol and says so. The hot
route is then answered by ``asgi.CouponQueryApp``, the same bytes at a higher CPU cost.
"""

from __future__ import annotations

import asyncio
from typing import Literal

import structlog
import uvicorn

__all__ = ["BUILT_FOR_UVICORN", "fits", "http_protocol"]

BUILT_FOR_UVICORN = "0.54"
"""The uvicorn minor ``HotRouteProtocol`` was written against and tested with."""

log = structlog.get_logger(__name__)


def fits(version: str) -> bool:
    """Whether a uvicorn version is of the minor ``HotRouteProtocol`` was written against."""
    return version.split(".")[:2] == BUILT_FOR_UVICORN.split(".")


def http_protocol(
    version: str = uvicorn.__version__,
) -> type[asyncio.Protocol] | Literal["httptools"]:
    """The protocol class to give ``uvicorn.Config(http=...)`` under uvicorn ``version``."""
    if not fits(version):
        log.warning(
            "hot_route_protocol_off",
            uvicorn=version,
            built_for=BUILT_FOR_UVICORN,
            detail="serving with uvicorn's stock httptools protocol",
        )
        return "httptools"
    # Imported only now: on another uvicorn the private names it imports may not exist.
    from punchcard_coupon_query.hotroute.protocol import HotRouteProtocol  # noqa: PLC0415

    return HotRouteProtocol
