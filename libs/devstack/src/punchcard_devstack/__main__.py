"""``python -m punchcard_devstack``: start Kafka and PostgreSQL and wait for Ctrl-C."""

from __future__ import annotations

import signal
import sys
import threading

from punchcard_devstack.processes import DevStackError
from punchcard_devstack.stack import DevStack


def main() -> int:
    """Print how to reach the stack, then hold it up until SIGINT or SIGTERM."""
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    stack = DevStack(log=lambda line: print(line, file=sys.stderr))
    try:
        endpoints = stack.start()
    except DevStackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        for name, value in endpoints.environment().items():
            print(f"export {name}={value}")
        sys.stdout.flush()
        done.wait()
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
