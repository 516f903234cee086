"""A lean XMPP client over asyncio streams: exact bytes on the wire, for tests and benchmarks.

It speaks just enough RFC 6120 (STARTTLS with an optional client certificate, SASL, bind) to
drive the server precisely, including with input a real client would never send.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from dataclasses import dataclass
from pathlib import Path

HEADER = (
    "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' "
    "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
)


def client_context(
    server_cert: Path, certfile: Path | None = None, keyfile: Path | None = None
) -> ssl.SSLContext:
    """Trust exactly the server's self-signed certificate; present ours when given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(server_cert))
    ctx.check_hostname = False
    if certfile is not None:
        ctx.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
    return ctx


@dataclass
class RawClient:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    domain: str
    buffer: bytes = b""

    @classmethod
    async def connect(
        cls, host: str, port: int, domain: str, *, source: str | None = None
    ) -> RawClient:
        """Connect, from the local address ``source`` when given (127.0.0.x on loopback)."""
        local = (source, 0) if source is not None else None
        reader, writer = await asyncio.open_connection(host, port, local_addr=local)
        return cls(reader, writer, domain)

    async def send(self, data: str | bytes) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)
        await self.writer.drain()

    async def read_until(self, *markers: bytes, timeout: float = 5.0) -> bytes:
        """Read until any marker appears; returns and consumes everything up to its end."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for marker in markers:
                idx = self.buffer.find(marker)
                if idx >= 0:
                    end = idx + len(marker)
                    out, self.buffer = self.buffer[:end], self.buffer[end:]
                    return out
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"none of {markers!r} in {self.buffer[-400:]!r}")
            chunk = await asyncio.wait_for(self.reader.read(65536), remaining)
            if not chunk:
                raise ConnectionError(f"closed; last bytes {self.buffer[-400:]!r}")
            self.buffer += chunk

    async def read_iq(self, iq_id: str, timeout: float = 5.0) -> bytes:
        """Read until the whole <iq/> with this id has arrived; returns it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        marker = f"id='{iq_id}'".encode()
        while True:
            at = self.buffer.find(marker)
            if at >= 0:
                start = self.buffer.rfind(b"<iq", 0, at)
                tag_end = self.buffer.find(b">", at)
                if start >= 0 and tag_end >= 0:
                    if self.buffer[tag_end - 1 : tag_end] == b"/":
                        end = tag_end + 1
                    else:
                        close = self.buffer.find(b"</iq>", tag_end)
                        end = close + 5 if close >= 0 else -1
                    if end > 0:
                        out, self.buffer = self.buffer[start:end], self.buffer[end:]
                        return out
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no iq {iq_id!r} in {self.buffer[-400:]!r}")
            chunk = await asyncio.wait_for(self.reader.read(65536), remaining)
            if not chunk:
                raise ConnectionError(f"closed; last bytes {self.buffer[-400:]!r}")
            self.buffer += chunk

    async def read_all(self, timeout: float = 5.0) -> bytes:
        """Everything until the server closes the connection."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"still open; last bytes {self.buffer[-400:]!r}")
            try:
                chunk = await asyncio.wait_for(self.reader.read(65536), remaining)
            except (ConnectionResetError, ssl.SSLError):
                chunk = b""
            if not chunk:
                out, self.buffer = self.buffer, b""
                return out
            self.buffer += chunk

    async def open_stream(self) -> bytes:
        await self.send(HEADER.format(domain=self.domain))
        return await self.read_until(b"</stream:features>")

    async def starttls(self, context: ssl.SSLContext) -> bytes:
        """STARTTLS (RFC 6120 §5.4) and the restarted stream's features."""
        await self.open_stream()
        await self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        await self.read_until(b"<proceed")
        await self.read_until(b"/>")
        self.buffer = b""
        await self.writer.start_tls(context, server_hostname=self.domain)
        return await self.open_stream()

    async def auth(self, mechanism: str, initial: bytes | None) -> bytes:
        """Start SASL; returns the <success/>, <failure/> or <challenge/> that answers it."""
        if initial is None:
            body = ""
        else:
            body = base64.b64encode(initial).decode() if initial else "="
        await self.send(
            f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mechanism}'>{body}</auth>"
        )
        return await self.read_until(
            b"</success>",
            b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
            b"</failure>",
            b"</challenge>",
        )

    async def bind(self, resource: str | None = None) -> bytes:
        await self.open_stream()
        inner = f"<resource>{resource}</resource>" if resource else ""
        await self.send(
            f"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>{inner}"
            "</bind></iq>"
        )
        return await self.read_iq("bind1")

    async def close(self) -> None:
        try:
            self.writer.write(b"</stream:stream>")
            await self.writer.drain()
        except (ConnectionError, RuntimeError):
            pass
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass
