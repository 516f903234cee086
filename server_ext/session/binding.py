"""Resource binding for a C2S session (RFC 6120 §7): the resource lock a certificate with
a full JID in its xmppAddr sets (XEP-0257 §2, XEP-0178), and a newer session replacing an
older one on the same resource (§7.7.2.2)."""

from __future__ import annotations

import secrets

from pairing.errors import InvalidJID
from server_ext.session.actions import Action, Bound
from server_ext.session.state import SessionState
from server_ext.wire.events import BindRequested


class Binding(SessionState):
    """Answers the client's bind request once SASL succeeded."""

    def _bind(self, event: BindRequested, actions: list[Action]) -> None:
        identity = self._identity
        assert identity is not None
        requested = event.resource
        locked = self._locked_resource
        if locked is not None and requested not in (None, locked):
            # XEP-0257 §2 / XEP-0178: a full JID in xmppAddr pins the resource.
            self.stream.bind_failed(
                event.iq_id, "cancel", "not-allowed", f"this certificate may bind only {locked!r}"
            )
            return
        resource = locked or requested or f"r-{secrets.token_hex(6)}"
        try:
            jid = identity.with_resource(resource)
        except InvalidJID as exc:
            self.stream.bind_failed(event.iq_id, "modify", "bad-request", str(exc))
            return
        self.jid = jid
        displaced = self._context.sessions.add(self._owner)
        if displaced is not None:
            # RFC 6120 §7.7.2.2: the newer session wins; the old one gets <conflict/>.
            displaced.terminate("conflict", "replaced by a new session for the same resource")
        actions.append(Bound())
        self.stream.bind_succeeded(event.iq_id, jid)


__all__ = ["Binding"]
