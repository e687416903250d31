"""Keep secrets out of logs, spans, health output and error messages."""

from __future__ import annotations

import hashlib
import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["fingerprint", "redact_text", "redact_url"]

_MASK = "***"
# user:password@ or :password@ inside any URL-looking token. Greedy up to the LAST "@" before
# the path, as URL parsers do, so an unencoded "@" inside a password is masked too.
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<userinfo>[^/\s]*)@")
_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&#\s]*")


def redact_url(url: str) -> str:
    """Return ``url`` with its password (and ``password=`` query value) replaced by ``***``.

    The user name, host, port and database stay visible because they help debugging.
    Anything that does not parse as a URL is returned with URL userinfo masked anyway.
    """
    if "@" not in url and "password=" not in url.lower():
        return url  # nothing secret: show it exactly as given
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        # A lone userinfo without ":" is often a legacy bare password: mask it whole.
        netloc = f"{user}:{_MASK}@{hostport}" if sep else f"{_MASK}@{hostport}"
    query = re.sub(r"(?i)(password=)[^&]*", rf"\g<1>{_MASK}", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Mask the userinfo of every URL that appears inside free text."""
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{_MASK}@", text)
    return _QUERY_PASSWORD.sub(rf"\g<1>{_MASK}", text)


def fingerprint(secret: str | bytes, length: int = 12) -> str:
    """Return a short, stable, non-reversible tag for a session id, token or key.

    Logs use this instead of the value so that two log lines about the same session can be
    correlated without exposing the session id.
    """
    data = secret.encode() if isinstance(secret, str) else secret
    return hashlib.sha256(data).hexdigest()[:length]
