"""Which setup code a pairing window may try on which device, and the fleet CSV it reads.

A wrong code costs the device one of its lifetime attempts (docs/threat-model.md), so a
window tries a code only where the user said it belongs: a scanned label or a fleet CSV row
names the device, and the prompt asks about one device. A *bare* ``--code`` names none; it is
tried on one device at a time, at most once per device, and after the first device that
proves it, on no other.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from pairing.errors import PairingError
from pairing.protocol.pair_messages import DeviceHello
from pairing.protocol.setup_code import SetupCode, SetupLabel, parse_device_id

#: A fleet CSV larger than this is refused before it is read (tens of thousands of devices fit).
MAX_CODES_FILE_BYTES = 4 * 1024 * 1024
#: The longest cell a row may have: a label payload is 39 characters.
MAX_FIELD_CHARS = 100
_HEADER_CELLS = ("device_id", "device")


class CodeListError(PairingError, ValueError):
    """A fleet CSV or a set of labels cannot be used; the message names the file and line."""


class CodeSource(Enum):
    LABEL = "label"  # a scanned label: device id, setup id and code
    FLEET = "fleet"  # a fleet CSV row: device id and code
    PROMPT = "prompt"  # the user typed it for the device being asked about
    BARE = "bare"  # --code: nobody said which device it belongs to


@dataclass(frozen=True, slots=True)
class Claim:
    """A code the window may try on one device, and why it thinks the code is that device's."""

    code: SetupCode
    source: CodeSource

    @property
    def bound(self) -> bool:
        """True when the code was given for this very device (a wrong one is the user's)."""
        return self.source is not CodeSource.BARE


@dataclass(frozen=True, slots=True)
class FleetEntry:
    line: int
    device_id: str
    code: SetupCode
    label: SetupLabel | None = None


def read_codes_file(path: Path) -> list[FleetEntry]:
    """Rows of ``device_id,code`` (a header row is allowed) or label payloads, checked whole.

    Every problem is one :class:`CodeListError` naming the line: not UTF-8 text (UTF-16 and
    binary files are named as such), an oversized file or field, a bad device id or code, and
    a device listed twice.
    """
    try:
        with path.open("rb") as handle:  # bounded: the path may be a pipe or /dev/zero
            raw = handle.read(MAX_CODES_FILE_BYTES + 1)
    except OSError as exc:
        raise CodeListError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_codes(raw, path)


def parse_codes(raw: bytes, path: Path) -> list[FleetEntry]:
    """The rows of a codes file's bytes (``path`` names it in errors); see read_codes_file."""
    if len(raw) > MAX_CODES_FILE_BYTES:
        raise CodeListError(
            f"{path} is larger than {MAX_CODES_FILE_BYTES // (1024 * 1024)} MiB; "
            "that is not a list of setup codes"
        )
    text = _decode(path, raw)
    entries: list[FleetEntry] = []
    first_line: dict[str, int] = {}
    reader = csv.reader(io.StringIO(text, newline=""))
    header_allowed = True
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise CodeListError(f"{path}:{reader.line_num}: not a CSV row ({exc})") from None
        line = reader.line_num
        cells = [c.strip() for c in row]
        for cell in cells:
            if len(cell) > MAX_FIELD_CHARS:
                raise CodeListError(
                    f"{path}:{line}: a field is {len(cell)} characters long; a row is "
                    "device_id,code or a label payload"
                )
        cells = [c for c in cells if c]
        if not cells:
            continue
        if header_allowed and cells[0].lower() in _HEADER_CELLS:
            header_allowed = False
            continue
        header_allowed = False
        entry = _entry(path, line, cells)
        if entry.device_id in first_line:
            raise CodeListError(
                f"{path}:{line}: device {entry.device_id} is listed twice "
                f"(first on line {first_line[entry.device_id]}); keep one row per device"
            )
        first_line[entry.device_id] = line
        entries.append(entry)
    return entries


def _decode(path: Path, raw: bytes) -> str:
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise CodeListError(f'{path} is UTF-16 text; save it as UTF-8 ("CSV UTF-8")')
    nul = raw.find(b"\0")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        raise CodeListError(f"{path}:{line}: binary data (a NUL byte); expected a CSV text file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise CodeListError(f"{path}:{line}: not UTF-8 text; save the file as UTF-8") from None


def _entry(path: Path, line: int, cells: list[str]) -> FleetEntry:
    try:
        if cells[0].upper().startswith("XMPP-DP-SETUP:"):
            label = SetupLabel.parse(cells[0])
            return FleetEntry(line, label.device_id, label.code, label)
        if len(cells) < 2:
            raise CodeListError(f"{path}:{line}: a row needs a device id and a code")
        return FleetEntry(line, parse_device_id(cells[0]), SetupCode.parse(cells[1]))
    except CodeListError:
        raise
    except PairingError as exc:
        raise CodeListError(f"{path}:{line}: {exc}") from None


@dataclass
class CodeBook:
    """The codes a window knows, and which device each may be tried on."""

    single: SetupCode | None = None  # a bare --code
    by_hash: dict[bytes, SetupLabel] = field(default_factory=dict)
    by_device: dict[str, Claim] = field(default_factory=dict)
    prompt: Callable[[DeviceHello], Awaitable[SetupCode | None]] | None = None
    _bare_tried: set[str] = field(default_factory=set, init=False)  # it failed on these
    _bare_trying: str | None = field(default=None, init=False)  # being tried on this one
    bare_proven_by: str | None = field(default=None, init=False)  # the device that proved it

    def add_label(self, label: SetupLabel, *, where: str = "") -> None:
        self._bind(label.device_id, Claim(label.code, CodeSource.LABEL), where)
        self.by_hash[label.setup_hash] = label

    def load_csv(self, path: Path) -> None:
        for entry in read_codes_file(path):
            where = f"{path}:{entry.line}"
            if entry.label is not None:
                self.add_label(entry.label, where=where)
            else:
                self._bind(entry.device_id, Claim(entry.code, CodeSource.FLEET), where)

    def _bind(self, device_id: str, claim: Claim, where: str) -> None:
        known = self.by_device.get(device_id)
        if known is not None and known.code != claim.code:
            raise CodeListError(
                f"{where or 'a label'}: device {device_id} was given two different codes"
            )
        self.by_device[device_id] = claim

    @property
    def expected(self) -> int | None:
        """How many devices this window waits for (None: until it times out)."""
        bare = 1 if self.single is not None else 0
        if self.by_device or bare:
            return len(self.by_device) + bare
        return None

    def knows(self, device_id: str, setup_hash: bytes) -> bool:
        """Whether a device found on the LAN is worth connecting to (reverse pairing)."""
        return (
            setup_hash in self.by_hash
            or device_id in self.by_device
            or self._bare_open_for(device_id)
            or self.prompt is not None
        )

    def _bare_open_for(self, device_id: str) -> bool:
        return (
            self.single is not None
            and self.bare_proven_by is None
            and self._bare_trying is None
            and device_id not in self._bare_tried
        )

    async def lookup(self, hello: DeviceHello) -> Claim | None:
        """The code to try on this device, or None: it is not expected (no strike for it)."""
        label = self.by_hash.get(hello.setup_hash)
        if label is not None and label.device_id == hello.device_id:
            return Claim(label.code, CodeSource.LABEL)
        if hello.device_id in self.by_device:
            return self.by_device[hello.device_id]
        if self.single is not None and hello.device_id == self.bare_proven_by:
            return Claim(self.single, CodeSource.BARE)  # it proved the code: let it retry
        if self._bare_open_for(hello.device_id):
            assert self.single is not None
            self._bare_trying = hello.device_id
            return Claim(self.single, CodeSource.BARE)
        if self.prompt is not None:
            code = await self.prompt(hello)
            return Claim(code, CodeSource.PROMPT) if code is not None else None
        return None

    def bare_finished(self, device_id: str, *, proven: bool | None) -> None:
        """The bare code's attempt on ``device_id`` ended: proven, refused, or unfinished
        (None: the attempt broke off before the proof, so the device may be asked again)."""
        if self._bare_trying != device_id:
            return
        self._bare_trying = None
        if proven:
            self.bare_proven_by = device_id
        elif proven is False:
            self._bare_tried.add(device_id)
