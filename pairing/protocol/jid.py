"""JIDs prepared per RFC 7622: the one place where XMPP identifiers are normalised.

Every localpart, domainpart and resourcepart that enters the project (a CLI argument, a SASL
username or authzid, a certificate's xmppAddr, an enrollment URI, a LAN message, a stream
header) goes through :func:`prepare_localpart`, :func:`prepare_domainpart` or
:func:`prepare_resourcepart`, usually by way of :meth:`JID.parse`. Two strings name the same
account exactly when they prepare to the same JID, and a string that PRECIS refuses is
refused everywhere with the same reason, so no entry point can map a name onto another account.

- localpart: PRECIS UsernameCaseMapped (RFC 7622 §3.3, RFC 8265 §3.3), then the characters
  RFC 7622 §3.3.1 forbids.
- resourcepart: PRECIS OpaqueString (RFC 7622 §3.4, RFC 8265 §4.2).
- domainpart (RFC 7622 §3.2): the width, case and NFC mappings of RFC 5895 §2, then strict
  IDNA2008 (RFC 5891/5892) through the ``idna`` package, kept as lower-case U-labels. We do not
  use the wider UTS #46 mapping: it silently drops invisible characters and folds compatibility
  characters (``ex<U+200B>ample`` → ``example``, U+FB01 ``ﬁ`` → ``fi``), the very behaviour RFC 8264
  refuses in the other two parts. IP literals (RFC 7622 §3.2.1) are kept in canonical form.
"""

from __future__ import annotations

import functools
import ipaddress
import unicodedata
from dataclasses import dataclass

import idna
from precis_i18n import get_profile

from pairing.errors import InvalidJID

# RFC 7622 §3.3.1: these characters are forbidden in a localpart even though PRECIS allows them.
_LOCALPART_FORBIDDEN = frozenset("\"&'/:<>@")
_MAX_PART_BYTES = 1023  # RFC 7622 §3.2, §3.3, §3.4

_USERNAME = get_profile("UsernameCaseMapped")
_OPAQUE = get_profile("OpaqueString")

# precis-i18n names why a code point is refused; these are the words a person reads.
_PRECIS_REASONS = {
    "empty": "is empty",
    "spaces": "has a space",
    "controls": "has a control character",
    "has_compat": "has a compatibility character; write its plain form",
    "precis_ignorable_properties": "has an invisible (default-ignorable) character",
    "unassigned": "has an unassigned code point",
    "symbols": "has a symbol",
    "punctuation": "has punctuation",
    "other": "has a character PRECIS disallows",
    "exceptions": "has a character PRECIS disallows",
    "backward_compatible": "has a character PRECIS disallows",
    "old_hangul_jamo": "has an old Hangul jamo",
    "other_letter_digits": "has a character PRECIS disallows",
    "bidi_rule": "mixes right-to-left and left-to-right text against the bidi rule (RFC 5893)",
    "context": "has a joiner or other contextual character out of its context",
    "zero_width_joiner": "has a zero-width joiner out of its context",
    "zero_width_nonjoiner": "has a zero-width non-joiner out of its context",
    "not_idempotent": "does not prepare to a stable form",
}

# Cache sizes bound memory even when a peer sends endless distinct names; the common names (the
# server's domain, its accounts) stay cached, so preparing a JID per stanza costs a dict lookup.
_CACHE = 4096


def _describe(part: str, exc: UnicodeEncodeError) -> str:
    key = exc.reason.rpartition("/")[2]
    reason = _PRECIS_REASONS.get(key, f"is refused by PRECIS ({exc.reason})")
    # A code point is named in U+ form: the offending one is often invisible. The bidi rule
    # is about the whole string, so no single code point is to blame.
    if key not in ("empty", "bidi_rule") and 0 <= exc.start < len(exc.object):
        ch = exc.object[exc.start]
        reason += f" (U+{ord(ch):04X} at position {exc.start + 1})"
    return f"the {part} {reason}"


def _check_length(value: str, part: str) -> str:
    if len(value.encode("utf-8")) > _MAX_PART_BYTES:
        raise InvalidJID(f"the {part} is longer than 1023 bytes")
    return value


@functools.lru_cache(maxsize=_CACHE)
def prepare_localpart(text: str) -> str:
    """Enforce RFC 7622 §3.3 on a localpart, raising :class:`InvalidJID` with the reason."""
    try:
        value: str = _USERNAME.enforce(text)
    except UnicodeEncodeError as exc:
        raise InvalidJID(_describe("localpart", exc)) from None
    if any(ch in _LOCALPART_FORBIDDEN for ch in value):
        raise InvalidJID("the localpart may not contain any of \" & ' / : < > @")
    return _check_length(value, "localpart")


@functools.lru_cache(maxsize=_CACHE)
def prepare_resourcepart(text: str) -> str:
    """Enforce RFC 7622 §3.4 on a resourcepart, raising :class:`InvalidJID` with the reason."""
    try:
        value: str = _OPAQUE.enforce(text)
    except UnicodeEncodeError as exc:
        raise InvalidJID(_describe("resource", exc)) from None
    return _check_length(value, "resource")


def _width_mapped(ch: str) -> str:
    # RFC 5895 §2.1 (and RFC 8264 §9.3): fullwidth and halfwidth forms map to their
    # decomposition; other compatibility characters are left for IDNA2008 to refuse.
    if unicodedata.decomposition(ch).startswith(("<wide>", "<narrow>")):
        return unicodedata.normalize("NFKC", ch)
    return ch


@functools.lru_cache(maxsize=_CACHE)
def prepare_domainpart(text: str) -> str:
    """Enforce RFC 7622 §3.2 on a domainpart, raising :class:`InvalidJID` with the reason."""
    # RFC 7622 §3.2: a trailing dot is removed before any other processing.
    value = text.removesuffix(".")
    if not value:
        raise InvalidJID("the domain is empty")
    if value.startswith("[") and value.endswith("]"):
        try:
            return f"[{ipaddress.IPv6Address(value[1:-1]).compressed}]"
        except ValueError:
            raise InvalidJID("the domain is not a valid IPv6 literal") from None
    mapped = unicodedata.normalize("NFC", "".join(_width_mapped(ch) for ch in value).lower())
    try:
        # Strict IDNA2008: the A-labels are computed and checked, then turned back into
        # U-labels, so "xn--bcher-kva.example" and "bücher.example" are the same domain.
        ulabels: str = idna.decode(idna.encode(mapped, uts46=False))
    except (idna.IDNAError, UnicodeError) as exc:
        raise InvalidJID(f"the domain is not a valid domain name: {exc}") from None
    return _check_length(ulabels, "domain")


@dataclass(frozen=True, slots=True)
class JID:
    """A JID whose parts are prepared on construction; ``local`` and ``resource`` may be empty."""

    local: str
    domain: str
    resource: str = ""

    def __post_init__(self) -> None:
        # Preparing is idempotent (RFC 8264 §7), so a JID built from prepared parts is
        # unchanged, and one built from raw parts can never hold an unprepared name.
        if self.local:
            object.__setattr__(self, "local", prepare_localpart(self.local))
        object.__setattr__(self, "domain", prepare_domainpart(self.domain))
        if self.resource:
            object.__setattr__(self, "resource", prepare_resourcepart(self.resource))

    @classmethod
    def parse(cls, raw: str) -> JID:
        """Split ``raw`` per RFC 7622 §3.1 and prepare each part; :class:`InvalidJID` says why."""
        if not isinstance(raw, str) or not raw:
            raise InvalidJID("an empty string is not a valid JID")
        # RFC 7622 §3.1: the resourcepart starts at the first "/", the localpart ends at the
        # first "@" before it. The split comes before preparation, so a fullwidth at sign or
        # solidus (U+FF20, U+FF0F) stays inside its part and is refused there instead of
        # splitting the JID.
        rest, slash, resource = raw.partition("/")
        local, at, domain = rest.partition("@")
        if not at:
            local, domain = "", rest
        try:
            if at and not local:
                raise InvalidJID("the localpart is empty")
            if slash and not resource:
                raise InvalidJID("the resource is empty")
            return cls(local, domain, resource)
        except InvalidJID as exc:
            raise InvalidJID(f"{raw!r} is not a valid JID: {exc}") from None

    @classmethod
    def parse_account(cls, raw: str, domain: str) -> JID:
        """An account (bare JID) from ``alice`` (meaning ``alice@domain``) or ``alice@host``.

        RFC 6120 §6.3.8: the SASL simple user name of XMPP is the localpart, so a name
        without "@" is prepared whole as a localpart ("a/b" is refused, not split).
        """
        if "@" not in raw:
            try:
                return cls(raw, domain) if raw else cls.parse(raw)
            except InvalidJID as exc:
                raise InvalidJID(f"{raw!r} is not a valid user name: {exc}") from None
        jid = cls.parse(raw)
        if jid.resource:
            raise InvalidJID(f"{raw!r} names a resource; an account is user@domain")
        return jid

    @property
    def bare(self) -> JID:
        """This JID without its resource."""
        return JID(self.local, self.domain) if self.resource else self

    @property
    def is_bare(self) -> bool:
        return not self.resource

    def with_resource(self, resource: str) -> JID:
        """This JID's bare form with ``resource`` (prepared)."""
        if not resource:
            raise InvalidJID("the resource is empty")
        return JID(self.local, self.domain, resource)

    def __str__(self) -> str:
        text = f"{self.local}@{self.domain}" if self.local else self.domain
        return f"{text}/{self.resource}" if self.resource else text
