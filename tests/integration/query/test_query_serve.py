"""The served process: configured by environment, ready when the database is, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

import httpx
import pytest
from punchcard_devstack import Endpoints

from tests.helpers import eventually

pytestmark = pytest.mark.integration

RUN = (
    "from punchcard_coupon_query.app import run; "
    "from punchcard_platform.settings import Settings; run(Settings())"
)


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_serve_answers_then_stops_cleanly_on_sigterm(stack: Endpoints) -> None:
    """uvicorn on PUNCHCARD_HTTP_PORT; SIGTERM ends it with exit code 0 after closing the pool."""
    port = free_port()
    env = {
        **os.environ,
        "PUNCHCARD_DATABASE_URL": stack.database_url,
        "PUNCHCARD_HTTP_HOST": "127.0.0.1",
        "PUNCHCARD_HTTP_PORT": str(port),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RUN,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:

        async def ready() -> bool:
            if process.returncode is not None:
                raise AssertionError(f"coupon-query exited with {process.returncode}")
            try:
                async with httpx.AsyncClient() as http:
                    response = await http.get(f"http://127.0.0.1:{port}/readyz")
            except httpx.TransportError:
                return False
            return response.status_code == 200

        await eventually(ready, timeout=30, what="coupon-query ready")
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
        assert process.returncode == 0, output.decode()
        assert b"coupon_query_stopped" in output
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
