"""SASLprep (RFC 4013) for passwords and usernames, from the stdlib's stringprep tables."""

from __future__ import annotations

import stringprep
import unicodedata

from server_ext.errors import ServerExtError


class SASLprepError(ServerExtError, ValueError):
    """The string is not allowed by RFC 4013."""


_PROHIBITED = (
    stringprep.in_table_c12,
    stringprep.in_table_c21_c22,
    stringprep.in_table_c3,
    stringprep.in_table_c4,
    stringprep.in_table_c5,
    stringprep.in_table_c6,
    stringprep.in_table_c7,
    stringprep.in_table_c8,
    stringprep.in_table_c9,
)


def saslprep(text: str) -> str:
    """Prepare ``text`` per RFC 4013 §2, raising :class:`SASLprepError` with the reason."""
    if text.isascii() and text.isprintable():
        return text  # the common case: nothing to map, nothing prohibited
    # RFC 4013 §2.1: non-ASCII spaces map to SPACE, "commonly mapped to nothing" are dropped.
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch for ch in text if not stringprep.in_table_b1(ch)
    )
    # RFC 4013 §2.2: normalization form KC.
    normalized = unicodedata.normalize("NFKC", mapped)
    for ch in normalized:
        if any(check(ch) for check in _PROHIBITED[1:]):
            raise SASLprepError("the string contains a prohibited character (RFC 4013 §2.3)")
        if stringprep.in_table_a1(ch):
            raise SASLprepError("the string contains an unassigned code point (RFC 4013 §2.5)")
    # RFC 3454 §6: bidirectional rules.
    if any(stringprep.in_table_d1(ch) for ch in normalized):
        if any(stringprep.in_table_d2(ch) for ch in normalized):
            raise SASLprepError("the string mixes left-to-right and right-to-left text")
        if not (stringprep.in_table_d1(normalized[0]) and stringprep.in_table_d1(normalized[-1])):
            raise SASLprepError("right-to-left text must start and end with such a character")
    return normalized
