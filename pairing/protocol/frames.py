"""Framing for pair-setup over TCP: ``type (1 byte) | length (2 bytes, big-endian) | body``."""

from __future__ import annotations

from dataclasses import dataclass, field

from pairing.errors import LocalProtocolError, RemoteProtocolError

HEADER = 3
MAX_BODY = 16 * 1024  # a certificate, a signature and some JSON fit easily


@dataclass(frozen=True, slots=True)
class Frame:
    type: int
    body: bytes = field(repr=False)

    def encode(self) -> bytes:
        if not 0 <= self.type <= 255 or len(self.body) > MAX_BODY:
            raise LocalProtocolError("frame type or size out of range")
        return bytes([self.type]) + len(self.body).to_bytes(2, "big") + self.body


class FrameDecoder:
    """Bytes in, whole frames out; an oversized frame is refused before it is buffered."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer.extend(data)
        frames: list[Frame] = []
        while len(self._buffer) >= HEADER:
            length = int.from_bytes(self._buffer[1:3], "big")
            if length > MAX_BODY:
                raise RemoteProtocolError(f"a frame of {length} bytes is larger than {MAX_BODY}")
            if len(self._buffer) < HEADER + length:
                break
            frames.append(Frame(self._buffer[0], bytes(self._buffer[HEADER : HEADER + length])))
            del self._buffer[: HEADER + length]
        return frames
