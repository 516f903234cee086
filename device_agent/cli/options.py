"""What the device-agent commands share: the state directory and the server options."""

from __future__ import annotations

import os
from pathlib import Path

import click

from device_agent import enrollment
from device_agent.keystore import KeyStore
from pairing.cli_output import BadInput
from pairing.errors import PairingError
from pairing.protocol.address import ServerAddress
from pairing.protocol.jid import JID
from pairing.xmpp.connection import TrustAnchor

DEFAULT_STATE = (
    Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "device-agent"
)


def server_settings(
    jid: JID, server_text: str | None, pin: str | None
) -> enrollment.ServerSettings | None:
    """Where a hand-registered device logs in (``--server`` and ``--pin``), parsed once."""
    if server_text is None and pin is None:
        return None
    if server_text is None or pin is None:
        raise click.UsageError(
            "give both --server HOST[:PORT] and --pin SHA256 (from `server-ext fingerprint`)"
        )
    try:
        address = ServerAddress.parse(server_text)
    except PairingError as exc:
        raise BadInput(f"--server: {exc}") from None
    try:
        trust = TrustAnchor(fingerprint=pin)
    except PairingError as exc:
        raise BadInput(f"--pin: {exc}") from None
    assert trust.fingerprint is not None
    return enrollment.ServerSettings(address.host, address.port, trust.fingerprint, str(jid))


def state_option(store: KeyStore) -> str:
    """`` --state-dir DIR`` when it is not the default, for commands we suggest."""
    return "" if store.state_dir == DEFAULT_STATE else f" --state-dir {store.state_dir}"


SERVER_HELP = "HOST[:PORT] the device logs in to (the manual way, XEP-0257)."
PIN_HELP = "The server certificate's SHA-256 fingerprint (`server-ext fingerprint`)."

#: --json on every command that changes the device's state (one JSON object on stdout; the
#: progress lines go to stderr either way).
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
