"""What a session asks of its adapter: the few things only the code that owns the socket,
the TLS engine and the timers can do (``server_ext.net.server``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StartTLS:
    """Write what is queued in plaintext (``<proceed/>``), then put TLS on the connection."""


@dataclass(frozen=True, slots=True)
class HoldFailure:
    """Read nothing for ``delay`` seconds, then call :meth:`C2SSession.release`: a failed
    password on an account guessed from many addresses is answered late."""

    delay: float


@dataclass(frozen=True, slots=True)
class Authenticated:
    """SASL succeeded: the connection no longer counts as unauthenticated."""


@dataclass(frozen=True, slots=True)
class Bound:
    """A resource is bound: the authentication deadline no longer applies."""


@dataclass(frozen=True, slots=True)
class SMEnabled:
    """XEP-0198 §3: the session may be resumed with ``resume_id``; the adapter keeps the index."""

    resume_id: str


@dataclass(frozen=True, slots=True)
class ResumeRequested:
    """XEP-0198 §5: find the session ``previd`` names and call :meth:`C2SSession.resume`
    with it, or :meth:`C2SSession.refuse_resume` when there is none."""

    previd: str
    h: int


Action = StartTLS | HoldFailure | Authenticated | Bound | SMEnabled | ResumeRequested


__all__ = [
    "Action",
    "Authenticated",
    "Bound",
    "HoldFailure",
    "ResumeRequested",
    "SMEnabled",
    "StartTLS",
]
