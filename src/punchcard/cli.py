"""The ``punchcard`` command: run a service, migrate, create topics, API keys, dead letters.

This is the composition root: it reads ``Settings`` once from the environment and hands
them to whatever it starts. Operator mistakes end in one line saying what to fix.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import uvloop
from punchcard_platform.errors import ConfigurationError, PunchcardError
from punchcard_platform.settings import Settings

if TYPE_CHECKING:
    from punchcard_platform.db import Database
    from punchcard_platform.dead_letters import DeadLetterFilter
from pydantic import ValidationError

__all__ = ["main"]

SERVICES = ("receipt-consumer", "coupon-query", "returns")

Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]


async def _migrate(settings: Settings, _: argparse.Namespace) -> int:
    from punchcard_platform.migrations import apply_migrations

    async with _database(settings) as db:
        applied = await apply_migrations(db)
    print(f"applied {', '.join(applied)}" if applied else "schema is up to date")
    return 0


async def _topics_create(settings: Settings, args: argparse.Namespace) -> int:
    from punchcard_platform.kafka import create_topics

    names = settings.topics.all()
    created = await create_topics(settings, names, partitions=args.partitions)
    for name in names:
        print(f"{'created' if name in created else 'exists '} {name}")
    return 0


@asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[Database]:
    from punchcard_platform.db import Database

    db = await Database.connect(settings.database_url, max_size=2)
    try:
        yield db
    finally:
        await db.close()


async def _apikey_create(settings: Settings, args: argparse.Namespace) -> int:
    from punchcard_coupon_query.apikeys import create_api_key

    async with _database(settings) as db:
        key_id, key = await create_api_key(db, args.scope, args.name)
    print(f"key id {key_id}, scope {args.scope}; the key is shown once, keep it safe:")
    print(key)
    return 0


async def _apikey_list(settings: Settings, _: argparse.Namespace) -> int:
    from punchcard_coupon_query.apikeys import list_api_keys

    async with _database(settings) as db:
        keys = await list_api_keys(db)
    for key in keys:
        state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
        print(f"{key.key_id}  {key.scope:<5}  {state:<18}  {key.name}")
    return 0


async def _apikey_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from punchcard_coupon_query.apikeys import revoke_api_key

    async with _database(settings) as db:
        revoked = await revoke_api_key(db, args.key_id)
    print(f"revoked {args.key_id}" if revoked else f"no active key {args.key_id}")
    return 0 if revoked else 1


async def _outbox_failed(settings: Settings, _: argparse.Namespace) -> int:
    from punchcard_platform.outbox import failed_publications

    async with _database(settings) as db, db.connection() as conn:
        failed = await failed_publications(conn)
    for event in failed:
        print(
            f"{event.event_id}  {event.topic}  key {event.key}  {event.size} bytes  "
            f"failed {event.failed_at:%Y-%m-%d %H:%M:%S}  {event.error}"
        )
    print(f"{len(failed)} output events set aside")
    return 0


async def _outbox_retry(settings: Settings, args: argparse.Namespace) -> int:
    from punchcard_platform.outbox import retry_failed_publications

    async with _database(settings) as db, db.transaction() as conn:
        queued = await retry_failed_publications(conn, args.event_ids)
    print(f"queued {queued} output events again")
    return 0


def _dead_letter_filter(args: argparse.Namespace) -> DeadLetterFilter:
    from punchcard_platform.dead_letters import DeadLetterFilter

    return DeadLetterFilter(reason=args.reason, since=args.since, id=args.id)


async def _dlq_list(settings: Settings, args: argparse.Namespace) -> int:
    from punchcard_platform.dead_letters import list_dead_letters

    async with _database(settings) as db, db.connection() as conn:
        letters = await list_dead_letters(conn, _dead_letter_filter(args), limit=args.limit)
    for letter in letters:
        state = f"replayed {letter.replayed_at:%Y-%m-%dT%H:%M:%S%z}" if letter.replayed_at else "-"
        print(
            f"{letter.id}  {letter.dead_lettered_at:%Y-%m-%dT%H:%M:%S%z}  {letter.reason:<26}  "
            f"{letter.topic}[{letter.partition}]@{letter.offset}  {state}  {letter.detail[:80]}"
        )
    return 0


async def _dlq_replay(settings: Settings, args: argparse.Namespace) -> int:
    from punchcard_platform.dead_letters import replay_dead_letters
    from punchcard_platform.kafka import ResilientProducer

    producer = ResilientProducer(settings)
    try:
        async with _database(settings) as db:
            replayed = await replay_dead_letters(db, producer, _dead_letter_filter(args))
    finally:
        await producer.stop()
    for letter in replayed:
        print(f"replayed {letter.id} to {letter.topic} ({letter.reason})")
    print(f"{len(replayed)} dead letter(s) replayed")
    return 0


def _rfc3339(value: str) -> datetime:
    """An argparse type: an RFC 3339 time with its offset."""
    try:
        moment = datetime.fromisoformat(value.upper())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {value!r}") from exc
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give the time with its offset: {value!r}")
    return moment


def _add_dlq_commands(commands: Any) -> None:
    dlq = commands.add_parser("dlq", help="list and replay dead letters")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    list_letters = dlq_commands.add_parser("list", help="dead letters, newest first")
    replay = dlq_commands.add_parser(
        "replay",
        help="publish dead letters not replayed yet back to their topic (key and bytes as "
        "they arrived) and mark them replayed",
    )
    for parser in (list_letters, replay):
        parser.add_argument("--reason", help="only this punchcard.error.reason")
        parser.add_argument("--since", type=_rfc3339, help="only those dead-lettered since")
        parser.add_argument("--id", type=int, help="only this one")
    list_letters.add_argument("--limit", type=int, default=100, help="at most this many")
    list_letters.set_defaults(run=_dlq_list)
    replay.set_defaults(run=_dlq_replay)


async def _serve(settings: Settings, args: argparse.Namespace) -> int:
    # A consumer service waits for a broker or database that is not reachable yet (saying
    # so in its log and on /readyz) instead of exiting into a supervisor's crash loop;
    # settings that can never work still end here with one line.
    if args.name == "receipt-consumer":
        from punchcard_receipt_consumer.service import serve as serve_receipts

        await serve_receipts(settings)
    elif args.name == "returns":
        from punchcard_returns.service import serve as serve_returns

        await serve_returns(settings)
    else:
        from punchcard_coupon_query.app import serve as serve_query

        await serve_query(settings)
    return 0


async def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    from punchcard.simulator import run_simulation

    return await run_simulation(settings, args)


def build_parser() -> argparse.ArgumentParser:
    """The command line of CONTRACT.md section 6."""
    parser = argparse.ArgumentParser(
        prog="punchcard",
        description="Electronic receipts, coupon limits and loyalty points over Kafka and "
        "PostgreSQL. Configured by PUNCHCARD_* environment variables.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run one service until SIGTERM")
    serve.add_argument("name", choices=SERVICES)
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate.set_defaults(run=_migrate)

    topics = commands.add_parser("topics", help="manage Kafka topics")
    topic_commands = topics.add_subparsers(dest="topics_command", required=True)
    create_topics = topic_commands.add_parser("create", help="create every topic of the contract")
    create_topics.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="partitions per new topic (default PUNCHCARD_TOPIC_PARTITIONS, 12)",
    )
    create_topics.set_defaults(run=_topics_create)

    apikey = commands.add_parser("apikey", help="manage coupon-query API keys")
    key_commands = apikey.add_subparsers(dest="apikey_command", required=True)
    create_key = key_commands.add_parser("create", help="make a key; prints it as the last line")
    create_key.add_argument("--scope", choices=("read", "checkout", "admin"), required=True)
    create_key.add_argument("--name", default="")
    create_key.set_defaults(run=_apikey_create)
    list_keys = key_commands.add_parser("list", help="list keys (never the keys themselves)")
    list_keys.set_defaults(run=_apikey_list)
    revoke_key = key_commands.add_parser("revoke", help="revoke a key by its id")
    revoke_key.add_argument("key_id")
    revoke_key.set_defaults(run=_apikey_revoke)

    outbox = commands.add_parser("outbox", help="output events the broker refused for good")
    outbox_commands = outbox.add_subparsers(dest="outbox_command", required=True)
    list_failed = outbox_commands.add_parser(
        "failed", help="list the output events set aside, with the broker's error"
    )
    list_failed.set_defaults(run=_outbox_failed)
    retry_failed = outbox_commands.add_parser(
        "retry", help="queue the events set aside again (after fixing the topic or the event)"
    )
    retry_failed.add_argument(
        "event_ids", nargs="*", type=_event_id, metavar="EVENT_ID", help="only these (default all)"
    )
    retry_failed.set_defaults(run=_outbox_retry)
    _add_dlq_commands(commands)

    from punchcard.simulator import add_arguments as add_simulator_arguments

    simulate = commands.add_parser("simulate", help="a POS fleet publishing receipts and returns")
    add_simulator_arguments(simulate)
    simulate.set_defaults(run=_simulate)
    return parser


def _event_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an event id (a UUID): {text!r}") from exc


def _settings_problem(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        variable = "PUNCHCARD_" + "_".join(str(part) for part in error["loc"]).upper()
        lines.append(f"  {variable}: {error['msg']}")
    return "invalid configuration:\n" + "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, build Settings, run the command; exit 2 on bad configuration."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"punchcard: {_settings_problem(exc)}", file=sys.stderr)
        return 2
    from punchcard_platform.logging import configure_logging

    configure_logging(settings)
    command: Command = args.run
    try:
        return uvloop.run(command(settings, args))
    except ConfigurationError as exc:
        print(f"punchcard: {exc}", file=sys.stderr)
        return 2
    except PunchcardError as exc:
        print(f"punchcard: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
