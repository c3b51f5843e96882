"""``python -m punchcard_devstack [--brokers 3]``: start Kafka and PostgreSQL, wait for Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from punchcard_devstack.processes import DevStackError
from punchcard_devstack.stack import DevStack


def main(argv: list[str] | None = None) -> int:
    """Print how to reach the stack, then hold it up until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m punchcard_devstack", description=__doc__)
    parser.add_argument(
        "--brokers",
        type=int,
        choices=(1, 3),
        default=1,
        help="Kafka nodes: 1, or a cluster of 3 (replication 3, min.insync.replicas 2)",
    )
    args = parser.parse_args(argv)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    stack = DevStack(log=lambda line: print(line, file=sys.stderr), brokers=args.brokers)
    try:
        endpoints = stack.start()
    except DevStackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        for name, value in endpoints.environment().items():
            print(f"export {name}={value}")
        if args.brokers > 1:
            # What `punchcard topics create` then makes: every partition on three nodes.
            print(f"export PUNCHCARD_TOPIC_REPLICATION_FACTOR={min(args.brokers, 3)}")
            print("export PUNCHCARD_TOPIC_MIN_INSYNC_REPLICAS=2")
        sys.stdout.flush()
        done.wait()
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
