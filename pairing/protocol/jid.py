"""JIDs (RFC 7622), normalised enough to compare identities safely."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from pairing.errors import InvalidJID

# RFC 7622 §3.3.1: these characters are forbidden in a localpart.
_LOCALPART_FORBIDDEN = frozenset("\"&'/:<>@")
_MAX_PART_BYTES = 1023  # RFC 7622 §3.2, §3.3, §3.4


def _check_part(value: str, what: str, raw: str) -> None:
    if not value:
        raise InvalidJID(f"{raw!r} is not a valid JID: the {what} is empty")
    if len(value.encode("utf-8")) > _MAX_PART_BYTES:
        raise InvalidJID(f"{raw!r} is not a valid JID: the {what} is longer than 1023 bytes")
    for ch in value:
        category = unicodedata.category(ch)
        if category in ("Cc", "Cs", "Co", "Cn"):
            raise InvalidJID(f"{raw!r} is not a valid JID: the {what} has a control character")


def _normalise_localpart(value: str, raw: str) -> str:
    value = unicodedata.normalize("NFC", value).lower()
    _check_part(value, "localpart", raw)
    if any(ch in _LOCALPART_FORBIDDEN or ch.isspace() for ch in value):
        raise InvalidJID(
            f"{raw!r} is not a valid JID: the localpart may not contain spaces or any of "
            "\" & ' / : < > @"
        )
    return value


def _normalise_domain(value: str, raw: str) -> str:
    # RFC 7622 §3.2: a trailing dot is stripped before any other processing.
    value = unicodedata.normalize("NFC", value.removesuffix(".")).lower()
    _check_part(value, "domain", raw)
    if any(ch.isspace() or ch in "@/" for ch in value):
        raise InvalidJID(f"{raw!r} is not a valid JID: the domain has a space, '@' or '/'")
    return value


def _normalise_resource(value: str, raw: str) -> str:
    value = unicodedata.normalize("NFC", value)
    _check_part(value, "resource", raw)
    return value


@dataclass(frozen=True, slots=True)
class JID:
    """A normalised JID; ``local`` and ``resource`` may be empty strings."""

    local: str
    domain: str
    resource: str = ""

    @classmethod
    def parse(cls, raw: str) -> JID:
        """Parse and normalise ``raw``, raising :class:`InvalidJID` with the reason."""
        if not isinstance(raw, str) or not raw:
            raise InvalidJID("an empty string is not a valid JID")
        rest, slash, resource = raw.partition("/")
        local, at, domain = rest.rpartition("@")
        if not at:
            local, domain = "", rest
        return cls(
            _normalise_localpart(local, raw) if at else "",
            _normalise_domain(domain, raw),
            _normalise_resource(resource, raw) if slash else "",
        )

    @property
    def bare(self) -> JID:
        """This JID without its resource."""
        return JID(self.local, self.domain) if self.resource else self

    @property
    def is_bare(self) -> bool:
        return not self.resource

    def with_resource(self, resource: str) -> JID:
        """This JID's bare form with ``resource`` (validated)."""
        return JID(self.local, self.domain, _normalise_resource(resource, resource))

    def __str__(self) -> str:
        text = f"{self.local}@{self.domain}" if self.local else self.domain
        return f"{text}/{self.resource}" if self.resource else text
