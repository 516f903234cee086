"""The data directory: what ``server-ext init`` (or the first ``serve``) sets up, once.

``<data_dir>/server.toml`` is what marks a directory as a server's: every other command reads
it and refuses a directory without it, so an admin command run from the wrong directory can
no longer make a second server with a new identity (issue 10). The configuration is written
last, after the identity and the registry, so an interrupted ``init`` can simply be run again.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass
from pathlib import Path

from pairing.secure_files import write_private
from server_ext.config import ServerConfig
from server_ext.config_file import has_config, read_config, write_config
from server_ext.errors import ConfigError, DomainMismatch
from server_ext.net.server_certificate import (
    ServerCertificate,
    create_server_certificate,
    load_server_certificate,
    require_domain,
)
from server_ext.storage.registry import Registry


@dataclass(frozen=True, slots=True)
class SetUp:
    """The outcome of :func:`initialise`."""

    config: ServerConfig
    certificate: ServerCertificate
    created: bool  # False: the directory was set up already and nothing changed


def initialise(config: ServerConfig) -> SetUp:
    """Set up ``config.data_dir`` for ``config.domain``, or confirm it is set up for it.

    An existing configuration is kept as it is (a different domain is refused). A directory
    made by an older server-ext (a registry and a certificate, no configuration) is adopted
    when its certificate names the domain, and refused otherwise: the identity is never
    replaced here.
    """
    data_dir = config.data_dir
    if has_config(data_dir):
        existing = read_config(data_dir)
        if existing.domain != config.domain:
            raise DomainMismatch(
                f"{data_dir.absolute()} is already set up for {existing.domain}, not "
                f"{config.domain}"
            )
        return SetUp(existing, certificate_for(existing), created=False)
    if config.cert_file is not None and config.key_file is not None:
        certificate = load_server_certificate(config.cert_file, config.key_file)
        require_domain(certificate, config.domain)
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        config = dataclasses.replace(
            config, cert_file=config.cert_file.absolute(), key_file=config.key_file.absolute()
        )
    else:
        certificate = create_server_certificate(data_dir, config.domain)
        config = dataclasses.replace(config, cert_file=None, key_file=None)
    Registry.open(config.database_path).close()
    write_config(config)
    return SetUp(read_config(data_dir), certificate, created=True)


def certificate_for(config: ServerConfig) -> ServerCertificate:
    """The certificate ``config`` names, read and checked; never created or replaced."""
    if config.cert_file is None or config.key_file is None:
        raise ConfigError("the configuration names no certificate")
    if not config.cert_file.exists() and not config.key_file.exists():
        raise ConfigError(
            f"the server certificate {config.cert_file} is missing; restore it from a backup "
            "(devices pin it), or make a new identity on purpose with `server-ext tls rotate`"
        )
    return load_server_certificate(config.cert_file, config.key_file)


def stock_secret(path: Path) -> str:
    """The secret a stock server presents to the HTTPS face (the Prosody module's Bearer,
    MongooseIM's basic-auth password): read from ``path``, made there (0600) if missing."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        text = secrets.token_urlsafe(32)
        try:
            write_private(path, (text + "\n").encode("ascii"))
        except OSError as exc:
            raise ConfigError(f"cannot write the stock secret {path}: {exc}") from None
        return text
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the stock secret {path}: {exc}") from None
    if mode_open_to_others(path):
        raise ConfigError(f"{path} is readable by others; run chmod 600 on it")
    if len(text) < 16:
        raise ConfigError(f"{path} holds a secret shorter than 16 characters")
    return text


def mode_open_to_others(path: Path) -> bool:
    return bool(path.stat().st_mode & 0o077)


__all__ = ["SetUp", "certificate_for", "initialise", "stock_secret"]
