"""What one C2S session knows, shared by its parts: the stream, what the client presented,
the SASL exchange and its outcome, the bound JID and the XEP-0198 state.

:class:`server_ext.session.c2s.C2SSession` is made of parts, one a module, each a subclass
of :class:`SessionState`: the SASL step (``sasl_step``), enrollment and renewal before SASL
(``enrollment``), bind and the resource lock (``binding``) and XEP-0198
(``stream_management``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from pairing.protocol.enrollment import ENROLL_NS
from pairing.protocol.identity import PeerCertificate, UnreadableCertificate
from pairing.protocol.jid import JID
from server_ext.app.delivery import Sender
from server_ext.auth.mechanism import Mechanism
from server_ext.auth.scram import ChannelBindings
from server_ext.session import sm
from server_ext.session.services import SessionServices
from server_ext.session.sm import StreamManagement
from server_ext.wire import namespaces as ns
from server_ext.wire.events import Event
from server_ext.wire.stream import C2SStream

_CSI_FEATURE = ET.Element(ns.clark(ns.CSI, "csi"))  # XEP-0352 §4.1, offered after SASL


class SessionState:
    """The state of one c2s connection above :class:`C2SStream`.

    ``owner`` is what the session table routes to (the adapter, which can write); the
    session registers it when a resource is bound.
    """

    def __init__(
        self, services: SessionServices, owner: Sender, *, address: str, direct_tls: bool
    ) -> None:
        self._services = services
        self._context = services.context
        self._owner = owner
        self.address = address
        self.stream = C2SStream(
            services.context.domain,
            tls=direct_tls,
            max_stanza_bytes=services.max_stanza_bytes,
            extension_namespaces=(ENROLL_NS,),
            session_namespaces=(sm.SM_NS, ns.CSI),
            session_features=(sm.feature(), _CSI_FEATURE),
        )
        self._direct_tls = direct_tls
        #: What the client presented in its TLS handshake, parsed once.
        self.presented: PeerCertificate | UnreadableCertificate | None = None
        self._bindings: ChannelBindings | None = None
        self._mechanism: Mechanism | None = None
        self._mechanism_name = ""
        self._identity: JID | None = None
        self._locked_resource: str | None = None
        self._held: list[Event] | None = None  # events waiting behind a held failure
        self._held_failure: tuple[str, str | None] | None = None
        # Session facts, set once SASL succeeds and a resource is bound.
        self.jid: JID | None = None
        self.auth_method = ""
        self.fingerprint: str | None = None
        #: XEP-0198 state once the client enabled it.
        self.sm: StreamManagement | None = None


__all__ = ["SessionState"]
