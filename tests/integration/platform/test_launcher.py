"""The launcher starts real servers, and leaves nothing running once stopped."""

from __future__ import annotations

import os

from punchcard_devstack import DevStack
from punchcard_devstack.processes import port_answers


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_stopped_stack_leaves_no_process_and_no_port_behind(monkeypatch: object) -> None:
    """After stop, neither the broker nor the database runs, and the scratch folder is gone."""
    for name in ("PUNCHCARD_KAFKA_BOOTSTRAP_SERVERS", "PUNCHCARD_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)  # type: ignore[attr-defined]
    stack = DevStack(log=lambda _: None, backend="native")
    stack.start()
    assert stack.kafka is not None
    assert stack.postgres is not None
    kafka, postgres = stack.kafka, stack.postgres
    pids = [kafka._proc.pid, postgres._proc.pid]  # type: ignore[union-attr]
    assert port_answers(kafka.port)
    assert port_answers(postgres.port)
    stack.stop()
    assert not any(_alive(pid) for pid in pids)
    assert not port_answers(kafka.port)
    assert not port_answers(postgres.port)
    assert not stack.workdir.exists()
