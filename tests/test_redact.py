"""Secrets stay out of text: URL passwords are masked, tokens are fingerprinted."""

from __future__ import annotations

import pytest

from redisguard._redact import fingerprint, redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:s3cret@127.0.0.1:6380/0", "redis://:***@127.0.0.1:6380/0"),
        ("redis://app:s3cret@cache.internal:6379/2", "redis://app:***@cache.internal:6379/2"),
        ("rediss://s3cret@cache.internal", "rediss://***@cache.internal"),
        (
            "redis://127.0.0.1:6379/0?password=s3cret&db=1",
            "redis://127.0.0.1:6379/0?password=***&db=1",
        ),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://app:p@ss:w@rd@host:1/0", "redis://app:***@host:1/0"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    """The password is masked; user, host, port and database stay readable."""
    assert redact_url(url) == expected
    assert "s3cret" not in redact_url(url)


def test_redact_url_keeps_a_unix_socket_path() -> None:
    """A unix:// URL without credentials keeps its socket path and database."""
    shown = redact_url("unix:///run/redis.sock?db=0")
    assert shown.startswith("unix:")
    assert shown.endswith("/run/redis.sock?db=0")


def test_redact_url_survives_unparsable_input() -> None:
    """A URL that urlsplit rejects still has its userinfo masked."""
    assert redact_url("redis://u:s3cret@[::1") == "redis://***@[::1"


def test_redact_text_masks_every_url_in_free_text() -> None:
    """Error messages that embed URLs lose the userinfo of each of them."""
    text = "primary redis://a:pw1@h1:6379 failed, replica rediss://pw2@h2 too"
    assert redact_text(text) == "primary redis://***@h1:6379 failed, replica rediss://***@h2 too"


def test_redact_text_leaves_plain_text_alone() -> None:
    """Text without URLs is unchanged."""
    assert redact_text("Error 111 connecting to 127.0.0.1:6380.") == (
        "Error 111 connecting to 127.0.0.1:6380."
    )


def test_fingerprint_is_short_stable_and_not_the_secret() -> None:
    """A fingerprint is deterministic, hex, of the asked length, and hides the value."""
    secret = "sess_6f1c9a2b4d8e0f13"
    tag = fingerprint(secret)
    assert tag == fingerprint(secret.encode())
    assert len(tag) == 12
    assert int(tag, 16) >= 0
    assert secret not in tag
    assert fingerprint(secret, length=8) == tag[:8]
    assert fingerprint("another") != tag
