"""The console's sign-in: the API key in a cookie, a token against cross-site forms.

The cookie holds the key itself (HttpOnly, SameSite=Strict, Secure over TLS), so each
request is checked through the API's own key cache and a revoked key stops working
within the API's own delay (``apikeys.KEY_CACHE_SECONDS``); the server keeps no
sessions. Forms that change state carry a token derived from the key by HMAC: a page
can hold it without holding the key, and another site can neither read nor forge it.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote

__all__ = [
    "COOKIE_NAME",
    "CSRF_FIELD",
    "csrf_token",
    "csrf_token_matches",
    "safe_next",
    "sign_in_address",
]

COOKIE_NAME = "punchcard_console"
CSRF_FIELD = "csrf_token"
HOME = "/console/"


def csrf_token(key: str) -> str:
    """The token forms of this session carry; the key cannot be recovered from it."""
    return hmac.new(key.encode(), b"punchcard console form", hashlib.sha256).hexdigest()


def csrf_token_matches(expected: str, presented: str | None) -> bool:
    """Whether a form's token is the session's ``csrf_token`` (compared in constant time)."""
    return presented is not None and hmac.compare_digest(expected, presented)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console address of this site, never another site.

    ``//host`` and ``/\\host`` are addresses of other sites to a browser, so only a path
    under ``/console/`` that starts with exactly one slash is followed.
    """
    if not target or not target.startswith(HOME) or target.startswith(("//", "/\\")):
        return HOME
    if any(c in target for c in "\\\r\n\t"):
        return HOME
    return target


def sign_in_address(path: str, query: str) -> str:
    """The sign-in page, told to come back to ``path?query`` afterwards."""
    target = path + (f"?{query}" if query else "")
    if target == HOME:
        return HOME
    return f"{HOME}?next={quote(target, safe='')}"
