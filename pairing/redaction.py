"""Secrets never reach a log: what the CLIs' log formatter removes from every line.

slixmpp logs every stanza it sends and receives at DEBUG (``SEND: <…>``, ``RECV: <…>``), so
``-vv`` would otherwise print the SASL exchange, the one-time token a device redeems and the
enrollment URI the server hands out. Removed, whatever logger wrote them:

- the body of SASL elements (``<auth>``, ``<response>``, ``<challenge>``, ``<success>``,
  RFC 6120 §6.4): PLAIN carries the password itself, SCRAM its proofs;
- ``<password>`` elements (XEP-0077 password change);
- any ``token`` attribute (``<enroll token=…/>``, docs/protocol.md §3);
- the token of an enrollment URI (``XMPP-DP:1/<TOKEN>/…``) and the code of a label payload
  (``XMPP-DP-SETUP:1/<ID>/<SETUP-ID>/<CODE>``);
- setup codes written ``XXX-XX-XXX``;
- any value a CLI registered with :func:`protect` (the password it read, a token, a code).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re

REDACTED = "[redacted]"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Element bodies: the name is matched again at the end tag, prefixed or not.
    (
        re.compile(
            r"(<(?:[\w.-]+:)?(auth|response|challenge|success|password)\b[^>]*(?<!/)>)"
            r"(.*?)(</(?:[\w.-]+:)?\2\s*>)",
            re.DOTALL,
        ),
        rf"\1{REDACTED}\4",
    ),
    (re.compile(r"""(\btoken\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE), rf"\1\2{REDACTED}\2"),
    (re.compile(r"(XMPP-DP:\d+/)[A-Za-z2-7]+", re.IGNORECASE), rf"\1{REDACTED}"),
    (
        re.compile(r"(XMPP-DP-SETUP:\d+/[^/\s]*/[^/\s]*/)[\d\s-]+", re.IGNORECASE),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{3}(?![\d-])"), REDACTED),
)

_protected: set[str] = set()


def protect(secret: str) -> None:
    """Redact this exact value from every later log line (a password, a token, a code)."""
    if len(secret) >= 4:  # shorter values would blank out ordinary words
        _protected.add(secret)


def redact(text: str) -> str:
    """``text`` with every secret this module knows of replaced by ``[redacted]``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    for secret in sorted(_protected, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then redacts the whole line: message, arguments and traceback."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class RedactingJSONFormatter(logging.Formatter):
    """One JSON object per line for log shippers, redacted like :class:`RedactingFormatter`.

    The text is redacted before it is encoded, so an escaped secret cannot slip past the
    patterns.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, str] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)
