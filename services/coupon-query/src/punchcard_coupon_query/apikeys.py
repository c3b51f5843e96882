"""API keys: made once, shown once, kept only as a SHA-256 hash.

A key reads ``pc_<key_id>_<secret>``. The key id finds the stored row in one index
probe; the hash of the whole key is then compared in constant time, so neither a
database dump nor response timing gives a usable key away.

Serving processes remember each answer for ``KEY_CACHE_SECONDS`` (``ApiKeyCache``), so
a request costs no database round trip for its key; a revoked key therefore keeps
working for at most that long in each process. A key in use is checked again in the
background shortly before its answer expires, so busy keys never miss the cache. Keys
not in the cache are looked up at ``KEY_QUERIES_PER_SECOND`` at most per process, so
made-up keys cannot turn every request into a query.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

from punchcard_platform.db import Database

from punchcard_coupon_query import queries
from punchcard_coupon_query.metrics import KEY_QUERIES, KEYS_REFUSED_UNASKED

__all__ = [
    "KEY_CACHE_SECONDS",
    "KEY_QUERIES_PER_SECOND",
    "ApiKey",
    "ApiKeyCache",
    "Caller",
    "Scope",
    "authenticate",
    "create_api_key",
    "hash_key",
    "list_api_keys",
    "revoke_api_key",
]

KEY_CACHE_SECONDS = 5.0
"""How long a serving process trusts what it learnt about a key: revocation's delay."""
KEY_QUERIES_PER_SECOND = 50.0
"""Lookups of keys not in a process's cache it makes per second at most (and in a burst)."""

Scope = Literal["read", "checkout", "admin"]
_SCOPES: tuple[str, ...] = get_args(Scope)
_KEY = re.compile(r"pc_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
# Compared against when the key id is unknown, so an unknown id costs the same work.
_DECOY_HASH = hashlib.sha256(b"punchcard decoy key").digest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    """What ``punchcard apikey list`` shows about a key (never the key)."""

    key_id: str
    name: str
    scope: Scope
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the key that authenticated the request."""

    key_id: str
    scope: Scope


def hash_key(key: str) -> bytes:
    """The SHA-256 that is stored instead of the key."""
    return hashlib.sha256(key.encode()).digest()


def _scope(value: str) -> Scope:
    if value == "admin":
        return "admin"
    if value == "read":
        return "read"
    if value == "checkout":
        return "checkout"
    raise ValueError(f"unknown scope {value!r}; expected one of {', '.join(_SCOPES)}")


async def create_api_key(db: Database, scope: str, name: str = "") -> tuple[str, str]:
    """Make a key and store its hash; returns ``(key_id, key)``. The key is never shown again."""
    checked = _scope(scope)
    key_id = secrets.token_hex(8)
    key = f"pc_{key_id}_{secrets.token_urlsafe(32)}"
    async with db.transaction() as conn:
        await queries.insert_api_key(conn, key_id, name, checked, hash_key(key))
    return key_id, key


async def list_api_keys(db: Database) -> list[ApiKey]:
    """Every key, revoked ones included, oldest first."""
    async with db.connection() as conn:
        records = await queries.list_api_keys(conn)
    return [
        ApiKey(
            key_id=r.key_id,
            name=r.name,
            scope=_scope(r.scope),
            created_at=r.created_at,
            revoked_at=r.revoked_at,
        )
        for r in records
    ]


async def revoke_api_key(db: Database, key_id: str) -> bool:
    """Stop a key from working; False if no such key exists or it was already revoked."""
    async with db.transaction() as conn:
        return await queries.revoke_api_key(conn, key_id)


async def authenticate(db: Database, key: str) -> Caller | None:
    """The caller a presented key belongs to, or None if it is malformed, unknown or revoked."""
    match = _KEY.fullmatch(key)
    if match is None:
        return None
    async with db.connection() as conn:
        record = await queries.fetch_api_key(conn, match.group(1))
    stored = _DECOY_HASH if record is None else record.key_hash
    matches = hmac.compare_digest(stored, hash_key(key))
    if record is None or not matches or record.revoked_at is not None:
        return None
    return Caller(key_id=record.key_id, scope=_scope(record.scope))


class ApiKeyCache:
    """What recently presented keys turned out to be, for ``KEY_CACHE_SECONDS`` at most.

    Entries are keyed by the key's SHA-256, never the key. Working keys and refused ones
    (unknown or revoked) are kept apart, each bounded, so that a client cycling through
    made-up keys can neither evict the working ones nor make every request a query:

    - a working key stays until its entry expires; only a query that found the key
      can add one, so made-up keys never take the place of real ones;
    - a refused key is remembered in a bounded table of its own (the oldest go first),
      so a client retrying a bad key costs no queries;
    - a key that is in neither is looked up at most ``max_queries_per_second`` times a
      second per process (with bursts of as many); beyond that it is refused (401)
      without a query and without being remembered, so the real key it may be works on
      the client's next try. Malformed keys never cost a query.

    A key is asked for once at a time per process: requests that miss together wait for
    the same query. And a working key used in the last ``refresh_ahead`` seconds of its
    entry is asked for again in the background while the entry still answers (outside
    the rate cap: there are as many such queries as working keys in use). Without that,
    every busy key missed once per ``ttl``: at 10,000 requests/s each expiry sent a few
    dozen requests per process down the slow path at once, each with its own query, and
    the requests behind them waited 50-80 ms. An answer is never used past its entry's
    expiry, ``ttl`` after the query that gave it, so revocation takes ``ttl`` at most.
    """

    def __init__(
        self,
        db: Database,
        *,
        ttl: float = KEY_CACHE_SECONDS,
        refresh_ahead: float = 1.0,
        max_entries: int = 10_000,
        max_queries_per_second: float = KEY_QUERIES_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._ttl = ttl
        self._refresh_ahead = refresh_ahead
        self._max_entries = max_entries
        self._clock = clock
        # Per working key's digest: expiry, the caller, whether it was asked for again.
        self._working: dict[bytes, tuple[float, Caller, bool]] = {}
        # Per refused key's digest: expiry. In insertion order, so the oldest go first.
        self._refused: dict[bytes, float] = {}
        self._asking: dict[bytes, asyncio.Future[Caller | None]] = {}
        self._rate = max_queries_per_second
        self._tokens = max_queries_per_second
        self._filled_at = clock()

    def lookup(self, key: str) -> tuple[bool, Caller | None]:
        """``(True, caller_or_None)`` if the answer is known and fresh, else ``(False, None)``.

        A fresh answer near its expiry is asked for again in the background.
        """
        return self._fresh(hash_key(key), key)

    async def authenticate(self, key: str) -> Caller | None:
        """The caller a key belongs to (as ``authenticate``), from the cache when fresh.

        None also when the key is not known here and the process's key queries are over
        their rate: the client may try again.
        """
        if _KEY.fullmatch(key) is None:
            return None
        digest = hash_key(key)
        known, caller = self._fresh(digest, key)
        if known:
            return caller
        asking = self._asking.get(digest)
        if asking is None:
            if not self._may_query():
                KEYS_REFUSED_UNASKED.inc()
                return None
            asking = self._ask(digest, key)
        return await asyncio.shield(asking)

    def _may_query(self) -> bool:
        """Take one of the rate's tokens if there is one (a token bucket, refilled by time)."""
        now = self._clock()
        self._tokens = min(self._rate, self._tokens + (now - self._filled_at) * self._rate)
        self._filled_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _fresh(self, digest: bytes, key: str) -> tuple[bool, Caller | None]:
        entry = self._working.get(digest)
        if entry is None:
            refused_until = self._refused.get(digest)
            return (refused_until is not None and refused_until > self._clock()), None
        expires, caller, asked_again = entry
        left = expires - self._clock()
        if left <= 0:
            return False, None
        # Once per entry: if that query fails, the entry runs out and the next use asks.
        if left < self._refresh_ahead and not asked_again and digest not in self._asking:
            self._working[digest] = (expires, caller, True)
            self._ask(digest, key)
        return True, caller

    def _ask(self, digest: bytes, key: str) -> asyncio.Future[Caller | None]:
        """Query the key once; the answer goes into the cache and to everyone waiting."""
        asked_at = self._clock()
        KEY_QUERIES.inc()
        task = asyncio.get_running_loop().create_task(authenticate(self._db, key))
        self._asking[digest] = task

        def answered(done: asyncio.Future[Caller | None]) -> None:
            del self._asking[digest]
            if done.cancelled() or done.exception() is not None:
                return  # the waiters get the error; the next use asks again
            self._remember(digest, done.result(), asked_at + self._ttl)

        task.add_done_callback(answered)
        return task

    def _remember(self, digest: bytes, caller: Caller | None, expires: float) -> None:
        if caller is None:
            self._working.pop(digest, None)
            self._refused.pop(digest, None)  # re-inserted last: the newest
            if len(self._refused) >= self._max_entries:
                del self._refused[next(iter(self._refused))]
            self._refused[digest] = expires
            return
        self._refused.pop(digest, None)
        if digest not in self._working and len(self._working) >= self._max_entries:
            # As many working keys as entries: make room with the expired ones, or the oldest.
            now = self._clock()
            for stale in [d for d, (until, _, _) in self._working.items() if until <= now]:
                del self._working[stale]
            if len(self._working) >= self._max_entries:
                del self._working[next(iter(self._working))]
        self._working[digest] = (expires, caller, False)
