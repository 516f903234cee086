"""What a headless device keeps for LAN pairing: its label ids and SRP verifier, never the code.

It also keeps a lifetime count of wrong codes (HomeKit locks out after 100), so a LAN
attacker cannot guess the 8-digit code by restarting the device.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_agent import state_files
from device_agent.errors import DeviceAgentError
from device_agent.state_files import StateFile, StateFileError, StateFileMissing
from pairing.protocol.setup_code import SetupLabel
from pairing.protocol.srp import Verifier, make_verifier

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

    def to_json(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "setup_id": self.setup_id,
            "name": self.name,
            "resource": self.resource,
            "salt": state_files.b64(self.verifier.salt),
            "verifier": state_files.b64(self.verifier.verifier),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SetupState:
        return cls(
            state_files.text(data, "device_id"),
            state_files.text(data, "setup_id"),
            state_files.text(data, "name"),
            state_files.text(data, "resource"),
            Verifier(state_files.blob(data, "salt"), state_files.blob(data, "verifier")),
        )

    @classmethod
    def create(cls, state_dir: Path, label: SetupLabel, *, name: str, resource: str) -> SetupState:
        state = cls(
            label.device_id, label.setup_id, name, resource, make_verifier(label.code.digits)
        )
        try:
            SETUP.write(state_dir, state)
        except StateFileError as exc:
            # The write is atomic: on failure the previous label (if any) still holds.
            raise SetupStateError(f"cannot store the setup state: {exc}") from None
        return state

    @classmethod
    def load(cls, state_dir: Path) -> SetupState:
        try:
            return SETUP.read(state_dir)
        except StateFileMissing as exc:
            raise SetupStateError(
                f"no setup code yet ({exc.path}): run `device-agent label` and print the label"
            ) from None


@dataclass(frozen=True, slots=True)
class Strikes:
    """What ``attempts.json`` holds: wrong codes so far, and whether the device is locked."""

    failures: int = 0
    locked: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"failures": self.failures, "locked": self.locked}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Strikes:
        return cls(
            state_files.integer(data, "failures", default=0),
            state_files.flag(data, "locked", default=False),
        )


SETUP = StateFile(SETUP_FILE, SetupState)
ATTEMPTS = StateFile(ATTEMPTS_FILE, Strikes)


class AttemptCounter:
    """Wrong codes over the device's lifetime, persisted after every failure.

    Once the cap is reached the device is *locked* for good (also persisted): only a new
    label (``device-agent label --reset``) unlocks it, as HomeKit's MaxTries does.
    """

    def __init__(self, state_dir: Path, strikes: Strikes) -> None:
        self.state_dir = state_dir
        self.strikes = strikes

    @property
    def failures(self) -> int:
        return self.strikes.failures

    @property
    def locked(self) -> bool:
        return self.strikes.locked

    @classmethod
    def load(cls, state_dir: Path) -> AttemptCounter:
        try:
            strikes = ATTEMPTS.read_if_present(state_dir) or Strikes()
        except StateFileError as exc:
            # An unreadable counter must not reset to zero: treat it as locked.
            raise SetupStateError(f"{exc}; the device stays locked") from None
        return cls(state_dir, strikes)

    def record_failure(self, cap: int) -> None:
        failures = self.strikes.failures + 1
        strikes = Strikes(failures, self.strikes.locked or failures >= cap)
        try:
            ATTEMPTS.write(self.state_dir, strikes)
        except StateFileError as exc:
            # A strike that cannot be stored must stop pairing, or guesses would be free.
            raise SetupStateError(
                f"cannot record a wrong code: {exc}; the device stops pairing"
            ) from None
        finally:
            # Counted in memory even when the disk refused it: this run stops either way.
            self.strikes = strikes
