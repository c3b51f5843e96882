"""Problem documents (RFC 9457), and how a failure becomes one, for every route.

FastAPI's exception handlers (``api``) and the hot route (``hotroute``) both answer a
failure through ``failure_problem``, so it is classified, logged and worded once::

    Exception
    └── ServiceBusyError              503 + Retry-After: the hot route shed the request
        ├── QueueFullError            too many requests of this process already wait
        └── DeadlineExceededError     the database did not answer within the deadline

Besides these, a database that is away (``punchcard_platform.db.is_unavailable``) is a
503 with ``Retry-After`` too, and anything else a 500 whose traceback is logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import structlog
from punchcard_platform.db import is_unavailable

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "RETRY_AFTER_SECONDS",
    "DeadlineExceededError",
    "Failure",
    "QueueFullError",
    "ServiceBusyError",
    "failure_problem",
    "problem_body",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"
RETRY_AFTER_SECONDS = 1
"""What a 503 tells the client to wait before trying again: the database is either back
within a second (a restart) or the client is better off not adding to the queue."""

log = structlog.get_logger(__name__)


class ServiceBusyError(Exception):
    """The request was shed without an answer from the database: 503, try again later."""


class QueueFullError(ServiceBusyError):
    """As many hot-route requests as a process lets wait are already waiting."""


class DeadlineExceededError(ServiceBusyError):
    """The database did not answer the request's list within its deadline."""


def problem_body(
    status: int, detail: str | None = None, *, errors: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The fields of an RFC 9457 problem document."""
    body: dict[str, Any] = {"type": "about:blank", "title": HTTPStatus(status).phrase}
    body["status"] = status
    if detail:
        body["detail"] = detail
    if errors is not None:
        body["errors"] = errors
    return body


@dataclass(frozen=True, slots=True)
class Failure:
    """How a failed request is answered: its status, the problem's detail, extra headers."""

    status: int
    detail: str
    headers: dict[str, str]


_RETRY = {"Retry-After": str(RETRY_AFTER_SECONDS)}


def failure_problem(exc: BaseException, path: str) -> Failure:
    """Classify an exception a request ended with, and log it once as what it is.

    Shedding and an absent database are the environment's state (a warning, 503, come
    back shortly); anything else is a bug of ours (an error with its traceback, 500).
    """
    if isinstance(exc, ServiceBusyError):
        log.warning("request_shed", path=path, reason=str(exc))
        return Failure(503, str(exc), _RETRY)
    if is_unavailable(exc):
        log.warning("database_unavailable", path=path, error=str(exc))
        return Failure(503, "the database does not answer; try again", _RETRY)
    log.error("request_failed", path=path, exc_info=exc)
    return Failure(500, "an unexpected error; it has been logged", {})
