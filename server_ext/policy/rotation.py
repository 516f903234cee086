"""When a device may register a successor certificate (docs/admin.md, "Rotation")."""

from __future__ import annotations

import datetime as dt

from server_ext.errors import ServerExtError
from server_ext.model import CertState, DeviceState, RotationFacts


class RotationRefused(ServerExtError):
    """The device may not register a successor now; ``retry_after`` says when it may (s)."""

    def __init__(self, text: str, *, retry_after: int | None = None) -> None:
        super().__init__(text)
        self.retry_after = retry_after


def check_successor(facts: RotationFacts, *, now: dt.datetime, interval: dt.timedelta) -> None:
    """Allow a successor only for an active certificate of an active device, at most once per
    ``interval``; a device that asks again and again is refused (and its caller audits it).

    A successor that never logged in (the device could not store its new key) does not block
    a later rotation: it is superseded then, so there is never more than one waiting.
    """
    current = facts.current
    if current.state is not CertState.ACTIVE or current.device.state is not DeviceState.ACTIVE:
        raise RotationRefused("only an active certificate of an active device can be rotated")
    if facts.last_rotation_at is not None:
        allowed_at = facts.last_rotation_at + interval
        if allowed_at > now:
            wait = int((allowed_at - now).total_seconds()) + 1
            raise RotationRefused(
                f"this device registered a successor certificate recently; retry in {wait} s",
                retry_after=wait,
            )
