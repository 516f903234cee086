"""The ``<stream:features/>`` a c2s stream offers in each phase (RFC 6120 §4.3.2), serialized
once per distinct content.

The features are the same for almost every stream of a phase: serialized once per distinct
content, not three times per login (docs/performance.md, "Login cost"). Each phase's features
depend on what that phase offers only, so only that part of the content is read for the key
(one or two small elements, not every feature).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

from server_ext.wire import namespaces as ns
from server_ext.wire.events import Phase
from server_ext.wire.xmlwriter import serialize

__all__ = ["stream_features"]

_Shape = tuple[str, tuple[tuple[str, str], ...], str | None, str | None, tuple["_Shape", ...]]
# Serialized <stream:features/> by phase, mechanisms and the content of the extra features
# (before and after SASL). A few distinct keys exist in practice (with or without a client
# certificate, TLS 1.2 or 1.3); the bound only keeps odd configurations from growing it.
_FeaturesKey = tuple[Phase, tuple[str, ...], tuple[_Shape, ...]]
_FEATURES: dict[_FeaturesKey, bytes] = {}
_FEATURES_CACHE_SIZE = 64


def stream_features(
    phase: Phase,
    *,
    mechanisms: tuple[str, ...],
    extra_features: Sequence[ET.Element],
    session_features: Sequence[ET.Element],
) -> bytes:
    """The features of ``phase``: STARTTLS in plaintext; the SASL ``mechanisms`` and the
    ``extra_features`` once secured; bind, the old session and the ``session_features``
    after SASL."""
    key: _FeaturesKey
    if phase is Phase.SECURED:
        key = (phase, mechanisms, tuple(_shape(e) for e in extra_features))
    elif phase is Phase.AUTHENTICATED:
        key = (phase, (), tuple(_shape(e) for e in session_features))
    else:
        key = (phase, (), ())
    cached = _FEATURES.get(key)
    if cached is None:
        cached = _build(phase, mechanisms, extra_features, session_features)
        if len(_FEATURES) >= _FEATURES_CACHE_SIZE:
            _FEATURES.clear()
        _FEATURES[key] = cached
    return cached


def _build(
    phase: Phase,
    mechanisms: tuple[str, ...],
    extra_features: Sequence[ET.Element],
    session_features: Sequence[ET.Element],
) -> bytes:
    features = ET.Element(ns.clark(ns.STREAMS, "features"))
    if phase is Phase.PLAINTEXT:
        starttls = ET.SubElement(features, ns.clark(ns.TLS, "starttls"))
        ET.SubElement(starttls, ns.clark(ns.TLS, "required"))
    elif phase is Phase.SECURED:
        offered = ET.SubElement(features, ns.clark(ns.SASL, "mechanisms"))
        for name in mechanisms:
            ET.SubElement(offered, ns.clark(ns.SASL, "mechanism")).text = name
        features.extend(extra_features)
    elif phase is Phase.AUTHENTICATED:
        ET.SubElement(features, ns.clark(ns.BIND, "bind"))
        session = ET.SubElement(features, ns.clark(ns.SESSION, "session"))
        ET.SubElement(session, ns.clark(ns.SESSION, "optional"))
        features.extend(session_features)
    return serialize(features)


def _shape(element: ET.Element) -> _Shape:
    """Everything that serializing ``element`` depends on, as a hashable value."""
    return (
        element.tag,
        tuple(sorted(element.attrib.items())),
        element.text,
        element.tail,
        tuple(_shape(child) for child in element),
    )
