"""``server-ext backup``: everything the server needs to come back, in one new folder.

The folder is a complete data directory: ``server-ext --data-dir FOLDER serve`` runs from it.
The registry is copied with SQLite's online backup (consistent while ``serve`` writes), every
other file of the data directory as it is (server.toml, the TLS identity devices pin, the
stock secret, ejabberd's trust file). The copy is made under a temporary name beside the
destination and renamed into place at the end, so an interrupted backup leaves no folder that
looks complete.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
from pathlib import Path

import click

from server_ext.cli.settings import Settings, json_option, pass_settings
from server_ext.errors import ServerExtError

#: Files of a data directory that are not state: SQLite's journal files (the backup holds
#: their content) and the admin socket of a running server.
_SKIPPED_SUFFIXES = ("-wal", "-shm", "-journal")


def _copy_files(source: Path, target: Path, registry_name: str) -> list[str]:
    copied: list[str] = []
    for path in sorted(source.iterdir()):
        if path.name == registry_name or path.name.endswith(_SKIPPED_SUFFIXES):
            continue
        mode = path.lstat().st_mode
        if not stat.S_ISREG(mode):
            continue  # the admin socket, a leftover folder: not state
        shutil.copy2(path, target / path.name)  # keeps 0600 on keys and secrets
        copied.append(path.name)
    return copied


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@click.command()
@click.argument("destination", type=click.Path(path_type=Path))
@json_option
@pass_settings
def backup(settings: Settings, destination: Path, as_json: bool) -> None:
    """Copy the server's state into DESTINATION, a new folder (0700).

    Safe while the server runs. The folder is a data directory: restore by stopping the
    server and serving from it (`server-ext --data-dir DESTINATION serve`) or moving it into
    place. It holds the server's private key and secrets: keep it as you keep the original.
    Files that server.toml names outside the data directory (an operator's certificate) are
    not copied.
    """
    config = settings.config
    destination = destination.absolute()
    if destination.exists():
        raise ServerExtError(f"{destination} already exists: name a new folder")
    if not destination.parent.is_dir():
        raise ServerExtError(f"{destination.parent} is not a folder")
    partial = destination.with_name(f".{destination.name}.partial-{secrets.token_hex(4)}")
    try:
        partial.mkdir(mode=0o700)
        registry_file = config.database_path
        with settings.registry() as registry:
            registry.copy_to(partial / registry_file.name)
        copied = [registry_file.name, *_copy_files(settings.data_dir, partial, registry_file.name)]
        for name in copied:
            fd = os.open(partial / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(partial)
        partial.rename(destination)
        _fsync_dir(destination.parent)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise ServerExtError(f"cannot write the backup: {exc}") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    home = settings.data_dir.absolute()
    outside = [
        str(path)
        for path in (config.cert_file, config.key_file, config.stock_secret_path)
        if path is not None and path.exists() and path.absolute().parent != home
    ]
    if as_json:
        click.echo(json.dumps({"backup": str(destination), "files": copied, "not_copied": outside}))
        return
    click.echo(f"backed up {len(copied)} files to {destination}")
    for path in outside:
        click.echo(f"not copied (outside the data directory): {path}")
