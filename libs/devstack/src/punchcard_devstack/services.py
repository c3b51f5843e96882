"""Punchcard services as real processes, for make run, the end-to-end tests and benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from punchcard_devstack.processes import DevStackError, spawn

__all__ = ["ServiceProcess"]


class ServiceProcess:
    """``punchcard serve NAME`` in its own process, with its log in a file."""

    def __init__(self, name: str, *, env: dict[str, str], port: int, log_file: Path) -> None:
        self.name = name
        self.port = port
        self.log_file = log_file
        self._env = {**os.environ, **env, "PUNCHCARD_HTTP_PORT": str(port)}
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Where the service's HTTP port answers."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited (a stopped one still runs)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def exit_code(self) -> int | None:
        """The exit code if the process has ended by itself, else ``None``."""
        return self._proc.poll() if self._proc is not None else None

    def start(self) -> ServiceProcess:
        """Start the process (again, after ``kill``: same port, same log); see ``wait_healthy``."""
        if self.running:
            raise DevStackError(f"{self.name} is already running")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._proc = spawn(
            [sys.executable, "-m", "punchcard", "serve", self.name],
            log_file=self.log_file,
            env=self._env,
        )
        return self

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Block until ``/healthz`` answers 200, or fail with the tail of the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise DevStackError(
                    f"{self.name} exited with {self._proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:  # noqa: S310 - loopback
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise DevStackError(f"{self.name} not healthy within {timeout:.0f}s:\n{self.log_tail()}")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the service finishes its batch and exits; returns the exit code."""
        return self._signal(signal.SIGTERM, timeout)

    def kill(self) -> int:
        """SIGKILL: the crash that the exactly-once design must survive."""
        return self._signal(signal.SIGKILL, 10)

    def pause(self) -> None:
        """SIGSTOP: the process freezes, as in a long GC pause or a stalled VM; see ``resume``."""
        self._send(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT: a frozen process carries on where it stopped."""
        self._send(signal.SIGCONT)

    def _send(self, sig: int) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise DevStackError(f"{self.name} is not running")
        os.killpg(self._proc.pid, sig)

    def _signal(self, sig: int, timeout: float) -> int:
        if self._proc is None:
            return 0
        proc, self._proc = self._proc, None
        if proc.poll() is None:
            proc.send_signal(sig)
            if sig != signal.SIGKILL:
                # A frozen process cannot act on SIGTERM until it runs again.
                proc.send_signal(signal.SIGCONT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        """The end of the service's log, for error messages."""
        if not self.log_file.exists():
            return "(no log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
