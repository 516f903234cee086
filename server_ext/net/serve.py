"""``server-ext serve``: the certificate, the registry and a :class:`Server` for one process,
with its signals (SIGINT/SIGTERM stop, SIGHUP reloads TLS) and the banner it prints."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from pairing.protocol.identity import format_fingerprint
from server_ext.config import ServerConfig
from server_ext.errors import ConfigError
from server_ext.net.data_directory import certificate_for, stock_secret
from server_ext.net.server import Server
from server_ext.net.server_certificate import ServerCertificate, create_server_certificate
from server_ext.stock.base import context_for, load_kind
from server_ext.storage.registry import Registry


def load_certificate_for(config: ServerConfig) -> ServerCertificate:
    """The certificate ``config`` names, else the one in the data dir (made if there is none,
    never replaced)."""
    if config.cert_file is not None and config.key_file is not None:
        return certificate_for(config)  # a missing identity is an error, never regenerated
    return create_server_certificate(config.data_dir, config.domain)


async def serve(config: ServerConfig, *, ready: Callable[[Server], None] | None = None) -> None:
    """Run the server until cancelled or sent SIGINT/SIGTERM; SIGHUP reloads its certificate."""
    certificate = load_certificate_for(config)
    if not config.stock_kind.embedded and config.https_port is None:
        raise ConfigError(
            f"[stock] kind = {config.stock_kind.value!r} needs the HTTPS face (devices enroll "
            "there): set [https] port in server.toml"
        )
    with Registry.open(config.database_path) as registry:
        secret = stock_secret(config.stock_secret_path) if config.https_port is not None else ""
        stock = None
        if not config.stock_kind.embedded:
            stock = load_kind(config.stock_kind, context_for(config, registry, secret))
        server = Server(config, registry, certificate, stock=stock, stock_secret=secret)
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        handlers: dict[signal.Signals, Callable[[], object]] = {
            signal.SIGINT: stop.set,
            signal.SIGTERM: stop.set,
            signal.SIGHUP: server.reload_tls,  # `systemctl reload`, a certbot deploy hook
        }
        for sig, handler in handlers.items():
            try:
                loop.add_signal_handler(sig, handler)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - not on Unix
                pass
        # Announced only now: a SIGHUP sent as soon as the banner appears must reload, not
        # kill the server with the signal's default action.
        if ready is not None:
            ready(server)
        try:
            await stop.wait()
        finally:
            await server.stop()


def run(config: ServerConfig) -> None:
    """Blocking entry point for ``server-ext serve``: print where it listens, then serve."""

    def announce(server: Server) -> None:
        fp = format_fingerprint(server.certificate.fingerprint)
        for address in server.addresses:
            kind = "direct TLS (XEP-0368)" if address.direct_tls else "STARTTLS"
            print(f"listening on {address.host}:{address.port} ({kind})", flush=True)
        https = server.https_address
        if https is not None:
            print(f"HTTPS enrollment API on {https.host}:{https.port}", flush=True)
            print(
                f"web page: {server.web_origin}/  (sign in with an account's password)", flush=True
            )
        if not server.config.stock_kind.embedded:
            print(f"stock server: {server.config.stock_kind.value}", flush=True)
        if server.component is not None:
            settings = server.component.settings
            print(
                f"component {settings.domain} attaching to {settings.host}:{settings.port} "
                "(XEP-0114)",
                flush=True,
            )
        print(f"domain: {server.config.domain}", flush=True)
        print(f"server certificate SHA-256: {fp}", flush=True)
        print(f"data: {server.config.data_dir}  (Ctrl-C to stop)", flush=True)

    asyncio.run(serve(config, ready=announce))


__all__ = ["load_certificate_for", "run", "serve"]
