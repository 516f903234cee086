"""What every session of one server shares: the server's context, routing, the login
throttle and the limits of one session."""

from __future__ import annotations

from dataclasses import dataclass

from server_ext.app.delivery import Dispatcher
from server_ext.app.handlers import ServerContext
from server_ext.policy.throttle import LoginThrottle


@dataclass(frozen=True, slots=True)
class SessionServices:
    """What every session of one server shares."""

    context: ServerContext
    dispatcher: Dispatcher
    throttle: LoginThrottle
    max_stanza_bytes: int
    fake_salt_key: bytes  # for unknown users' SCRAM salts (stable across restarts)
    # XEP-0198: the longest a detached session is kept ('max'), and how many unacknowledged
    # stanzas one session may hold before it is closed.
    resume_timeout: int = 300
    max_unacked: int = 500


__all__ = ["SessionServices"]
