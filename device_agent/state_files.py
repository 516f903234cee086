"""The device's small JSON state files, one way: typed records, atomic writes, mode 0600.

Each file holds one record (a frozen dataclass) that says how it becomes JSON and back. A
:class:`StateFile` names the file and the record, and is the only code that touches it: it
writes through :func:`pairing.secure_files.write_private` (readers see the old file or the
whole new one, never half), and reading fails with one clear :class:`StateFileError` that
says which file and what is wrong with it. The file names and JSON fields are those of
earlier versions, so existing state directories keep working.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, Self, TypeVar

from device_agent.errors import DeviceAgentError
from pairing.secure_files import write_private


class StateFileError(DeviceAgentError):
    """A state file cannot be read or written; the message names it and says why."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path} {problem}")
        self.path = path


class StateFileMissing(StateFileError):
    """The state file does not exist (yet)."""


class JSONRecord(Protocol):
    """A record that one state file holds."""

    def to_json(self) -> dict[str, Any]: ...

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self: ...


R = TypeVar("R", bound=JSONRecord)


class MalformedRecord(ValueError):
    """A field of a state file has the wrong type or value (raised by ``from_json``)."""


def text(data: Mapping[str, Any], key: str, default: str | None = None) -> str:
    """The string field ``key`` (``default`` when it is absent, if given)."""
    value = data.get(key, default)
    if not isinstance(value, str):
        raise MalformedRecord(f"the field {key!r} must be a string")
    return value


def integer(data: Mapping[str, Any], key: str, default: int | None = None) -> int:
    """The integer field ``key`` (``default`` when it is absent, if given)."""
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedRecord(f"the field {key!r} must be an integer")
    return value


def flag(data: Mapping[str, Any], key: str, default: bool | None = None) -> bool:
    """The boolean field ``key`` (``default`` when it is absent, if given)."""
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise MalformedRecord(f"the field {key!r} must be true or false")
    return value


def blob(data: Mapping[str, Any], key: str) -> bytes:
    """The bytes of the base64 field ``key``."""
    try:
        return base64.b64decode(text(data, key), validate=True)
    except (binascii.Error, ValueError):
        raise MalformedRecord(f"the field {key!r} must be base64") from None


def b64(data: bytes) -> str:
    """``data`` as the base64 text :func:`blob` reads back."""
    return base64.b64encode(data).decode()


@dataclass(frozen=True, slots=True)
class StateFile(Generic[R]):
    """The file ``name`` in a state directory, holding one ``record``."""

    name: str
    record: type[R]
    indent: int | None = None  # server.json has always been indented for people to read

    def path(self, state_dir: Path) -> Path:
        return state_dir / self.name

    def exists(self, state_dir: Path) -> bool:
        return self.path(state_dir).exists()

    def read(self, state_dir: Path) -> R:
        """The record; :class:`StateFileMissing` if there is no file, else one clear error."""
        path = self.path(state_dir)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise StateFileMissing(path, "does not exist") from None
        except OSError as exc:
            raise StateFileError(path, f"cannot be read: {exc.strerror or exc}") from None
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise MalformedRecord("it does not hold a JSON object")
            return self.record.from_json(data)
        except (UnicodeDecodeError, ValueError) as exc:  # JSON errors and MalformedRecord
            raise StateFileError(path, f"is malformed: {exc}") from None

    def read_if_present(self, state_dir: Path) -> R | None:
        """The record, or None when there is no file; other problems still raise."""
        try:
            return self.read(state_dir)
        except StateFileMissing:
            return None

    def write(self, state_dir: Path, value: R) -> None:
        """Replace the file with ``value``, atomically and with mode 0600."""
        path = self.path(state_dir)
        data = json.dumps(value.to_json(), indent=self.indent).encode()
        try:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_private(path, data)
        except OSError as exc:
            raise StateFileError(path, f"cannot be written: {exc.strerror or exc}") from None

    def remove(self, state_dir: Path) -> None:
        self.path(state_dir).unlink(missing_ok=True)
