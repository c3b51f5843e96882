"""Which way the devstack starts Kafka and PostgreSQL: native packages, or containers.

The choice is made here and only here. ``PUNCHCARD_DEVSTACK`` decides when set:
``native`` (the Maven Central jars and Debian's PostgreSQL binaries, as on the machines
that build Punchcard, which have no Docker engine) or ``containers`` (testcontainers with
the official ``apache/kafka`` and ``postgres`` images, as on laptops and CI runners with
Docker). Unset (or ``auto``): containers when a Docker engine answers, else native. A
cluster of several brokers is only started natively.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from punchcard_devstack.processes import DevStackError

__all__ = ["DEVSTACK_VARIABLE", "Backend", "choose_backend", "docker_engine_answers"]

Backend = Literal["native", "containers"]

DEVSTACK_VARIABLE = "PUNCHCARD_DEVSTACK"


def choose_backend(
    value: str | None, docker_answers: Callable[[], bool], *, brokers: int = 1
) -> Backend:
    """The backend for ``PUNCHCARD_DEVSTACK=value``; ``docker_answers`` is asked only if needed.

    An explicit choice is never second-guessed: ``containers`` without an engine fails when
    the containers start, with the engine's own error, rather than running something else.
    """
    wanted = (value or "auto").strip().lower()
    if wanted == "native":
        return "native"
    if wanted == "containers":
        if brokers > 1:
            raise DevStackError(
                f"{DEVSTACK_VARIABLE}=containers starts one broker; a cluster of {brokers} "
                f"runs natively: set {DEVSTACK_VARIABLE}=native"
            )
        return "containers"
    if wanted != "auto":
        raise DevStackError(
            f"{DEVSTACK_VARIABLE}={value!r}: use native, containers or auto (the default)"
        )
    if brokers > 1:
        return "native"
    return "containers" if docker_answers() else "native"


def docker_engine_answers(timeout: float = 2.0) -> bool:
    """Whether a Docker engine answers a ping (``DOCKER_HOST`` or the local socket)."""
    try:
        import docker  # noqa: PLC0415 - only where the choice is made; may not be installed
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # any failure to reach it means "no engine"
        return False
