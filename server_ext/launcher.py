"""The ``server-ext`` entry point: one clear line when the server extra is not installed.

A device installs the base package only (no pyOpenSSL, no SQLite layer); the ``server-ext``
script exists there too, and must say what to install rather than end in a traceback.
"""

from __future__ import annotations

import importlib.util
import sys

#: Import names of what the ``server`` extra brings (pyproject.toml).
SERVER_EXTRA = ("OpenSSL", "sqlite_utils", "scramp", "aiohttp", "jinja2")
INSTALL_HINT = "pip install 'xmpp-device-pairing[server]'"


def missing_server_modules() -> list[str]:
    return [name for name in SERVER_EXTRA if importlib.util.find_spec(name) is None]


def main() -> None:
    missing = missing_server_modules()
    if missing:
        sys.exit(
            f"server-ext needs the server extra ({', '.join(missing)} missing): {INSTALL_HINT}"
        )
    from server_ext.cli import main as cli

    cli()
