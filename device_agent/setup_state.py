"""What a headless device keeps for LAN pairing: its label ids and SRP verifier, never the code.

It also keeps a lifetime count of wrong codes (HomeKit locks out after 100), so a LAN
attacker cannot guess the 8-digit code by restarting the device.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from device_agent.errors import DeviceAgentError
from pairing.protocol.setup_code import SetupLabel
from pairing.protocol.srp import Verifier, make_verifier
from pairing.secure_files import write_private

SETUP_FILE = "setup.json"
ATTEMPTS_FILE = "attempts.json"
PAIRING_LOCK = "pairing.lock"


class SetupStateError(DeviceAgentError):
    """The pairing state is missing or unreadable; the message says what to do."""


class AlreadyPairing(SetupStateError):
    """Another agent is pairing this device (same state directory) right now."""


@contextmanager
def pairing_lock(state_dir: Path) -> Iterator[None]:
    """Hold the device's pairing lock: one pairing per device at a time, on this machine.

    Two agents on one state directory would share one attempt counter and, advertising,
    one mDNS name; mDNS probing (RFC 6762 §8.1) only catches the second when the first
    answers in time, so the lock makes it certain here. The kernel drops it if we die.
    """
    path = state_dir / PAIRING_LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise SetupStateError(f"cannot use {path}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyPairing(
                f"another device-agent is already pairing this device ({state_dir}); stop it first"
            ) from None
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class SetupState:
    device_id: str
    setup_id: str
    name: str
    resource: str
    verifier: Verifier

    @classmethod
    def create(cls, state_dir: Path, label: SetupLabel, *, name: str, resource: str) -> SetupState:
        state = cls(
            label.device_id, label.setup_id, name, resource, make_verifier(label.code.digits)
        )
        try:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_private(
                state_dir / SETUP_FILE,
                json.dumps(
                    {
                        "device_id": state.device_id,
                        "setup_id": state.setup_id,
                        "name": name,
                        "resource": resource,
                        "salt": base64.b64encode(state.verifier.salt).decode(),
                        "verifier": base64.b64encode(state.verifier.verifier).decode(),
                    }
                ).encode(),
            )
        except OSError as exc:
            # The write is atomic: on failure the previous label (if any) still holds.
            raise SetupStateError(
                f"cannot store the setup state in {state_dir}: {exc.strerror or exc}"
            ) from None
        return state

    @classmethod
    def load(cls, state_dir: Path) -> SetupState:
        path = state_dir / SETUP_FILE
        try:
            data = json.loads(path.read_text())
            return cls(
                data["device_id"],
                data["setup_id"],
                data["name"],
                data["resource"],
                Verifier(base64.b64decode(data["salt"]), base64.b64decode(data["verifier"])),
            )
        except FileNotFoundError:
            raise SetupStateError(
                f"no setup code yet ({path}): run `device-agent label` and print the label"
            ) from None
        except (OSError, ValueError, KeyError) as exc:
            raise SetupStateError(f"{path} is unreadable: {exc}") from None


@dataclass
class AttemptCounter:
    """Wrong codes over the device's lifetime, persisted after every failure.

    Once the cap is reached the device is *locked* for good (also persisted): only a new
    label (``device-agent label --reset``) unlocks it, as HomeKit's MaxTries does.
    """

    path: Path
    failures: int = 0
    locked: bool = False

    @classmethod
    def load(cls, state_dir: Path) -> AttemptCounter:
        path = state_dir / ATTEMPTS_FILE
        try:
            data = json.loads(path.read_text())
            failures, locked = int(data.get("failures", 0)), bool(data.get("locked", False))
        except FileNotFoundError:
            failures, locked = 0, False
        except (OSError, ValueError, AttributeError) as exc:
            # An unreadable counter must not reset to zero: treat it as locked.
            raise SetupStateError(
                f"{path} is unreadable ({exc}); the device stays locked"
            ) from None
        return cls(path, failures, locked)

    def _save(self) -> None:
        try:
            write_private(
                self.path, json.dumps({"failures": self.failures, "locked": self.locked}).encode()
            )
        except OSError as exc:
            # A strike that cannot be stored must stop pairing, or guesses would be free.
            raise SetupStateError(
                f"cannot record a wrong code in {self.path}: {exc.strerror or exc}; "
                "the device stops pairing"
            ) from None

    def record_failure(self, cap: int) -> None:
        self.failures += 1
        self.locked = self.locked or self.failures >= cap
        self._save()
