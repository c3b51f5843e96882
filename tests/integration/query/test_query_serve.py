"""The served process: configured by environment, ready when the database is, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

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


def children(pid: int) -> list[int]:
    """The processes ``pid`` started that are still running (Linux /proc)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def running_processes() -> list[int]:
    """Every process id of the machine."""
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


@pytest.mark.parametrize("workers", [1, 3])
async def test_serve_answers_then_stops_cleanly_on_sigterm(stack: Endpoints, workers: int) -> None:
    """PUNCHCARD_HTTP_WORKERS processes on PUNCHCARD_HTTP_PORT; SIGTERM stops all, exit code 0."""
    port = free_port()
    env = {
        **os.environ,
        "PUNCHCARD_DATABASE_URL": stack.database_url,
        "PUNCHCARD_HTTP_HOST": "127.0.0.1",
        "PUNCHCARD_HTTP_PORT": str(port),
        "PUNCHCARD_HTTP_WORKERS": str(workers),
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
        started = children(process.pid)
        assert len(started) == (0 if workers == 1 else workers)
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
        assert process.returncode == 0, output.decode()
        # A worker still starting when SIGTERM came just ends; the others log their stop.
        assert b"coupon_query_stopped" in output
        assert not set(started) & set(await asyncio.to_thread(running_processes))
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
