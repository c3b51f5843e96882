"""End-to-end fixtures: the services as real processes on the session's Kafka and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from punchcard_devstack import ServiceProcess
from punchcard_devstack.processes import free_port
from punchcard_platform.settings import Settings

StartService = Callable[[str], ServiceProcess]


@pytest.fixture
def start_service(settings: Settings, tmp_path: Path) -> Iterator[StartService]:
    """Start ``punchcard serve NAME`` for this test's settings; all are stopped afterwards."""
    started: list[ServiceProcess] = []
    env = {**settings.environment(), "PUNCHCARD_LOG_FORMAT": "json"}

    def start(name: str) -> ServiceProcess:
        service = ServiceProcess(
            name, env=env, port=free_port(), log_file=tmp_path / f"{name}-{len(started)}.log"
        )
        started.append(service)
        service.start().wait_healthy()
        return service

    yield start
    for service in started:
        service.terminate()
