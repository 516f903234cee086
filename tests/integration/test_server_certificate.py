"""The server's TLS certificate: generated once and kept, or the operator's own."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from server_ext.errors import ConfigError
from server_ext.net.server_certificate import create_server_certificate, load_server_certificate
from tests.integration.conftest import ServerFactory


def test_generated_once_and_kept(tmp_path: Path) -> None:
    first = create_server_certificate(tmp_path, "localhost")
    assert stat.S_IMODE(first.key_path.stat().st_mode) == 0o600
    again = create_server_certificate(tmp_path, "localhost")
    assert again.fingerprint == first.fingerprint
    before = (first.cert_path.read_bytes(), first.key_path.read_bytes())
    # Another domain used to replace the key (issue 10): now it is refused, files untouched.
    with pytest.raises(ConfigError, match=r"is for localhost, not example\.org"):
        create_server_certificate(tmp_path, "example.org")
    assert (first.cert_path.read_bytes(), first.key_path.read_bytes()) == before


async def test_operator_certificate_is_served(make_server: ServerFactory, tmp_path: Path) -> None:
    own = create_server_certificate(tmp_path / "operator", "localhost")
    server = await make_server(cert_file=own.cert_path, key_file=own.key_path)
    assert server.fingerprint == own.fingerprint
    client = await server.raw_tls()  # the raw client trusts exactly server.cert_path
    ssl_object = client.writer.get_extra_info("ssl_object")
    import hashlib

    assert hashlib.sha256(ssl_object.getpeercert(binary_form=True)).hexdigest() == own.fingerprint
    assert not (server.config.data_dir / "server.key").exists()


def test_mismatched_or_missing_operator_files_are_clear(tmp_path: Path) -> None:
    one = create_server_certificate(tmp_path / "one", "localhost")
    two = create_server_certificate(tmp_path / "two", "localhost")
    with pytest.raises(ConfigError, match="does not belong"):
        load_server_certificate(one.cert_path, two.key_path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_server_certificate(tmp_path / "nope.crt", one.key_path)
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("hello")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_server_certificate(garbage, one.key_path)


async def test_a_second_server_on_the_same_data_directory_is_refused(
    make_server: ServerFactory,
) -> None:
    from server_ext.errors import ConfigError

    first = await make_server()
    with pytest.raises(ConfigError, match="already running"):
        await make_server(data_dir=first.config.data_dir)
