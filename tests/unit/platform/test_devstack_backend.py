"""The one place that picks native servers or containers, as a table of cases."""

from __future__ import annotations

import pytest
from punchcard_devstack import DevStackError
from punchcard_devstack.backend import Backend, choose_backend, docker_engine_answers


class DockerProbe:
    """A stand-in for the engine ping that remembers whether it was asked."""

    def __init__(self, answers: bool) -> None:
        self.answers = answers
        self.asked = False

    def __call__(self) -> bool:
        self.asked = True
        return self.answers


@pytest.mark.parametrize(
    ("value", "docker", "expected"),
    [
        (None, True, "containers"),
        (None, False, "native"),
        ("", True, "containers"),
        ("auto", False, "native"),
        ("AUTO", True, "containers"),
        ("native", True, "native"),
        ("native", False, "native"),
        ("containers", True, "containers"),
        ("containers", False, "containers"),
        (" Containers ", False, "containers"),
    ],
)
def test_the_variable_decides_and_otherwise_a_docker_engine_does(
    value: str | None, docker: bool, expected: Backend
) -> None:
    """native/containers as asked; unset or auto: containers exactly when Docker answers."""
    assert choose_backend(value, DockerProbe(docker)) == expected


@pytest.mark.parametrize("value", ["native", "containers"])
def test_an_explicit_choice_does_not_wait_for_a_docker_ping(value: str) -> None:
    """Pinging an engine costs up to two seconds; a set variable needs no ping."""
    probe = DockerProbe(answers=True)
    choose_backend(value, probe)
    assert not probe.asked


def test_a_cluster_of_brokers_runs_natively_even_where_docker_answers() -> None:
    """The containers path starts one broker; three are started from the jars."""
    assert choose_backend(None, DockerProbe(answers=True), brokers=3) == "native"


def test_containers_asked_for_a_cluster_is_refused_with_what_to_set() -> None:
    """An explicit choice is never silently replaced by another."""
    with pytest.raises(DevStackError, match="PUNCHCARD_DEVSTACK=native"):
        choose_backend("containers", DockerProbe(answers=True), brokers=3)


def test_an_unknown_value_names_the_ones_that_exist() -> None:
    """A typo is an error, not a silent fallback."""
    with pytest.raises(DevStackError, match="native, containers or auto"):
        choose_backend("docker", DockerProbe(answers=True))


def test_no_engine_here_answers_the_ping(monkeypatch: pytest.MonkeyPatch) -> None:
    """With DOCKER_HOST pointing nowhere, the probe says no within its timeout."""
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")
    assert docker_engine_answers(timeout=1.0) is False
