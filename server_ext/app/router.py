"""Live sessions and where a stanza between them goes (RFC 6120 §10, RFC 6121 §8.5)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Protocol

from pairing.protocol.jid import JID


class Session(Protocol):
    """What the router needs from a bound c2s session."""

    @property
    def jid(self) -> JID: ...

    @property
    def fingerprint(self) -> str | None: ...

    @property
    def available(self) -> bool: ...

    @property
    def priority(self) -> int: ...

    #: XEP-0352: None while the client is active; while it is inactive, the resources of
    #: its account it last knew to be available (their going away still reaches it).
    csi_known: set[JID] | None

    def deliver(self, element: ET.Element) -> None: ...

    def terminate(
        self, condition: str, text: str, application: ET.Element | None = None
    ) -> None: ...


class SessionTable:
    """Bound sessions by full JID, by account, and by client certificate."""

    def __init__(self) -> None:
        self._by_full: dict[JID, Session] = {}
        self._by_bare: dict[JID, dict[str, Session]] = {}
        self._by_fingerprint: dict[str, set[JID]] = {}

    def __len__(self) -> int:
        return len(self._by_full)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._by_full.values()))

    def get(self, full: JID) -> Session | None:
        return self._by_full.get(full)

    def add(self, session: Session) -> Session | None:
        """Bind ``session``; returns the session it displaced from the same full JID."""
        jid = session.jid
        old = self._by_full.get(jid)
        if old is not None:
            self.remove(old)
        self._by_full[jid] = session
        self._by_bare.setdefault(jid.bare, {})[jid.resource] = session
        if session.fingerprint:
            self._by_fingerprint.setdefault(session.fingerprint, set()).add(jid)
        return old

    def remove(self, session: Session) -> bool:
        """Unbind ``session`` if it is still the one bound to its JID."""
        jid = session.jid
        if self._by_full.get(jid) is not session:
            return False
        del self._by_full[jid]
        resources = self._by_bare.get(jid.bare)
        if resources is not None:
            resources.pop(jid.resource, None)
            if not resources:
                del self._by_bare[jid.bare]
        if session.fingerprint:
            jids = self._by_fingerprint.get(session.fingerprint)
            if jids is not None:
                jids.discard(jid)
                if not jids:
                    del self._by_fingerprint[session.fingerprint]
        return True

    def resources(self, bare: JID) -> list[Session]:
        """Every bound session of the account ``bare``."""
        return list(self._by_bare.get(bare, {}).values())

    def with_certificate(self, fingerprint: str) -> list[Session]:
        """Sessions that logged in with the certificate ``fingerprint`` (XEP-0257 ``users``)."""
        return [
            self._by_full[jid] for jid in sorted(self._by_fingerprint.get(fingerprint, ()), key=str)
        ]

    def message_recipients(self, bare: JID) -> list[Session]:
        """RFC 6121 §8.5.2.1.1: available resources with non-negative priority."""
        return [s for s in self.resources(bare) if s.available and s.priority >= 0]

    def available_resources(self, bare: JID) -> list[Session]:
        return [s for s in self.resources(bare) if s.available]
