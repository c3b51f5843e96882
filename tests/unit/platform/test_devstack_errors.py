"""Missing tools are named, with the package that brings them."""

from __future__ import annotations

from pathlib import Path

import pytest
from punchcard_devstack import DevStackError
from punchcard_devstack.kafka import KafkaBroker


def test_missing_java_is_reported_with_the_package_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without java on the PATH or JAVA_HOME, the broker refuses to start and says why."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(DevStackError, match="openjdk-17-jre-headless"):
        KafkaBroker(tmp_path, port=1, controller_port=2)
