"""A scratch PostgreSQL cluster from Debian's server binaries, made with ``initdb``."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

from punchcard_devstack.processes import (
    DevStackError,
    port_answers,
    spawn,
    stop_process,
    wait_until,
)

__all__ = ["PostgresServer", "ReplicaServer", "find_postgres_bindir"]

DATABASE = "punchcard"


def find_postgres_bindir() -> Path:
    """Where ``initdb`` and ``postgres`` live: the newest Debian install, else the PATH."""
    override = os.environ.get("PUNCHCARD_POSTGRES_BINDIR")
    candidates = [Path(override)] if override else []
    candidates += [
        Path(p).parent
        for p in sorted(
            glob.glob("/usr/lib/postgresql/*/bin/initdb"),
            key=lambda p: int(Path(p).parts[-3]),
            reverse=True,
        )
    ]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "postgres").exists():
            return folder
    raise DevStackError(
        "PostgreSQL server binaries (initdb, postgres) not found: apt-get install postgresql "
        "(or set PUNCHCARD_POSTGRES_BINDIR, or PUNCHCARD_DATABASE_URL to use an existing server)"
    )


def _run_as() -> str | None:
    # PostgreSQL refuses to run as root; the Debian package's own user is the obvious owner.
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise DevStackError(
            "running as root, PostgreSQL needs an unprivileged user: "
            "apt-get install postgresql creates 'postgres'"
        ) from None
    return "postgres"


class PostgresServer:
    """One cluster on a loopback port with trust authentication, for local use only."""

    def __init__(self, workdir: Path, *, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self._bindir = find_postgres_bindir()
        self._user = _run_as()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def database_url(self) -> str:
        """A URL for the ``punchcard`` database on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def log_file(self) -> Path:
        """The server's log."""
        return self.workdir / "postgres.log"

    def init_cluster(self) -> None:
        """``initdb`` a fresh cluster in the work directory."""
        self._make_data_dir(
            "initdb",
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )

    def _make_data_dir(self, program: str, *args: str) -> None:
        """Run ``program -D <data dir> *args`` as the database user, in a work dir it owns."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._user:
            shutil.chown(self.workdir, self._user, self._user)
        result = subprocess.run(  # noqa: S603 - fixed argv
            [str(self._bindir / program), "-D", str(self.workdir / "data"), *args],
            capture_output=True,
            text=True,
            check=False,
            user=self._user,
        )
        if result.returncode != 0:
            raise DevStackError(f"{program} failed:\n{result.stdout}{result.stderr}")

    def start(self) -> None:
        """Start the server; returns at once (see ``wait_ready``)."""
        if self._user:
            self.log_file.touch()
            shutil.chown(self.log_file, self._user, self._user)
        self._proc = spawn(
            [
                str(self._bindir / "postgres"),
                "-D",
                str(self.workdir / "data"),
                "-p",
                str(self.port),
                "-k",
                str(self.workdir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=256MB",
                # A scratch cluster: durability against power loss buys nothing here.
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "synchronous_commit=off",
            ],
            log_file=self.log_file,
            user=self._user,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the server accepts connections, then create the database."""

        def failed() -> str | None:
            if self._proc is not None and self._proc.poll() is not None:
                return f"postgres exited with {self._proc.returncode}; see {self.log_file}"
            return None

        isready = str(self._bindir / "pg_isready")

        def ready() -> bool:
            if not port_answers(self.port):
                return False
            return (
                subprocess.run(  # noqa: S603 - fixed argv
                    [isready, "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
                    check=False,
                ).returncode
                == 0
            )

        wait_until(ready, timeout=timeout, what="starting PostgreSQL", failed=failed)
        createdb = subprocess.run(  # noqa: S603 - fixed argv
            [
                str(self._bindir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                DATABASE,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if createdb.returncode != 0 and "already exists" not in createdb.stderr:
            raise DevStackError(f"createdb failed: {createdb.stderr}")

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def stop_immediate(self) -> None:
        """``pg_ctl stop -m immediate``: every backend dies at once, as in a crash.

        The next start replays the WAL; clients see their connections cut mid-transaction.
        """
        if self._proc is None:
            return
        result = subprocess.run(  # noqa: S603 - fixed argv
            [
                str(self._bindir / "pg_ctl"),
                "stop",
                "-D",
                str(self.workdir / "data"),
                "-m",
                "immediate",
                "-w",
            ],
            capture_output=True,
            text=True,
            check=False,
            user=self._user,
        )
        proc, self._proc = self._proc, None
        if result.returncode != 0 and proc.poll() is None:
            # pg_ctl could not do it: a postmaster that will not stop still has to go.
            stop_process(proc, sig=signal.SIGQUIT, timeout=10)
        else:
            proc.wait(30)

    def restart(self, timeout: float = 60.0) -> None:
        """Start again on the same data directory and port, and wait until it answers.

        Stops a running server with ``stop_immediate`` first, so this is "crash and come back".
        Call ``start`` from the thread that started the stack (the server's parent-death
        signal is tied to the spawning thread); ``wait_ready`` may run in any thread.
        """
        self.stop_immediate()
        self.start()
        self.wait_ready(timeout)

    def stop(self) -> None:
        """Fast shutdown (SIGINT): roll back open transactions and exit."""
        if self._proc is not None:
            stop_process(self._proc, sig=signal.SIGINT, timeout=30)
            self._proc = None


class ReplicaServer(PostgresServer):
    """A streaming replica of a running server: ``pg_basebackup -R``, then its own port.

    For testing read replicas: it replays the primary's WAL continuously and answers
    read-only queries, like a production standby. The primary must accept replication
    connections from loopback (``initdb -A trust`` clusters do).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int,
        primary_port: int,
        primary_host: str = "127.0.0.1",
        primary_user: str = "postgres",
    ) -> None:
        super().__init__(workdir, port=port)
        self.primary_host = primary_host
        self.primary_port = primary_port
        self.primary_user = primary_user

    def init_cluster(self) -> None:
        """Copy the primary with ``pg_basebackup -R`` (standby.signal and primary_conninfo)."""
        self._make_data_dir(
            "pg_basebackup",
            "-h",
            self.primary_host,
            "-p",
            str(self.primary_port),
            "-U",
            self.primary_user,
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the replica accepts (read-only) connections; its databases came along."""
        isready = str(self._bindir / "pg_isready")

        def failed() -> str | None:
            if self._proc is not None and self._proc.poll() is not None:
                return f"replica exited with {self._proc.returncode}; see {self.log_file}"
            return None

        def ready() -> bool:
            return (
                port_answers(self.port)
                and subprocess.run(  # noqa: S603 - fixed argv
                    [isready, "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
                    check=False,
                ).returncode
                == 0
            )

        wait_until(ready, timeout=timeout, what="starting the PostgreSQL replica", failed=failed)
