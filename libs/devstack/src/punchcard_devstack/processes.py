"""Small process helpers shared by the broker and the database launchers."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["DevStackError", "LogFn", "free_port", "repo_root", "stop_process", "wait_until"]


LogFn = Callable[[str], None]


class DevStackError(RuntimeError):
    """The local stack cannot start; the message says what to install or fix."""


def repo_root() -> Path:
    """The checkout this package was installed from (an editable workspace member)."""
    override = os.environ.get("PUNCHCARD_REPO_ROOT")
    if override:
        return Path(override)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "deploy" / "kafka" / "pom.xml").is_file():
            return parent
    raise DevStackError(
        "cannot find deploy/kafka/pom.xml above the punchcard_devstack package; "
        "set PUNCHCARD_REPO_ROOT to the Punchcard checkout"
    )


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_answers(port: int) -> bool:
    """Whether something accepts TCP connections on the loopback port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    failed: Callable[[], str | None] = lambda: None,
) -> None:
    """Poll ``condition`` until it holds; ``failed`` may report an early, fatal reason."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        reason = failed()
        if reason:
            raise DevStackError(f"{what} failed: {reason}")
        time.sleep(0.1)
    raise DevStackError(f"{what} did not happen within {timeout:.0f}s")


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: if the launcher is killed outright, its servers go too, so a
    # crashed test run leaves no broker or database behind. Runs after setuid in the child.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)


def spawn(
    args: list[str], *, log_file: Path, user: str | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a server in its own process group with its output going to ``log_file``."""
    with log_file.open("ab") as out:
        return subprocess.Popen(  # noqa: S603 - fixed argv built by this package
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - started from one thread only
            user=user,
            env=env,
        )


def stop_process(
    proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 20.0
) -> None:
    """Ask a server to stop, and kill its whole process group if it will not."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
