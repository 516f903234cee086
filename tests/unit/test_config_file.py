"""server.toml: what init writes reads back as the same settings; bad files get one line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from server_ext.config import ServerConfig
from server_ext.config_file import parse_config, read_config, render_config, write_config
from server_ext.errors import ConfigError, NoServerData


def test_every_setting_round_trips(tmp_path: Path) -> None:
    config = ServerConfig(
        domain="Example.ORG",
        data_dir=tmp_path,
        host="0.0.0.0",
        port=5999,
        direct_tls_port=None,
        public_host='xmpp "quoted" \\ host\x7f',
        cert_file=Path("/etc/letsencrypt/live/example.org/fullchain.pem"),
        key_file=tmp_path / "keys" / "server.key",
        auth_timeout=0.5,
        rotation_interval=0.0,
        token_default_ttl=90.0,
        token_max_ttl=7200.0,
    )
    write_config(config)
    again = read_config(tmp_path)
    assert again.domain == "example.org"
    assert again == dataclasses.replace(config, domain="example.org")
    text = (tmp_path / "server.toml").read_text()
    assert 'default_ttl                           = "1m30s"' in text
    assert 'key                                   = "keys/server.key"' in text


def test_defaults_name_the_identity_in_the_data_directory(tmp_path: Path) -> None:
    config = parse_config('domain = "localhost"\n', tmp_path, source="t")
    assert (config.cert_file, config.key_file) == (tmp_path / "server.crt", tmp_path / "server.key")
    assert "[tokens]" in render_config(config)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('domain = "localhost"\n[limits]\nmax_stanzabytes = 5\n', "unknown setting limits."),
        ('domain = "localhost"\nport = 5222\n', "unknown setting 'port'"),
        ("[listen]\nport = 5222\n", "the domain is missing"),
        ('domain = "localhost"\n[listen]\nport = "5222"\n', "listen.port must be a int"),
        ('domain = "localhost"\n[listen]\nport = 70000\n', "out of range"),
        ('domain = "localhost"\n[tokens]\ndefault_ttl = "10 minutes"\n', "not a duration"),
        ('domain = "local host"\n', "domain:"),
        ("domain = \n", "not valid TOML"),
        ('domain = "x"\n[https]\npublic_url = "http://devices.example.org"\n', "https origin"),
        ('domain = "x"\n[https]\npublic_url = "https://devices.example.org/pair"\n', "no path"),
        ('domain = "x"\n[https]\npublic_url = "https://u:p@devices.example.org"\n', "origin"),
    ],
)
def test_a_bad_file_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_config(text, tmp_path, source="server.toml")


def test_a_directory_without_a_configuration_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(NoServerData, match="no server data in") as empty:
        read_config(tmp_path / "nothing")
    assert empty.value.exit_code == 4
    (tmp_path / "registry.sqlite3").write_bytes(b"")
    with pytest.raises(NoServerData, match="older server-ext"):
        read_config(tmp_path)


def test_the_web_page_origin_behind_a_proxy_is_read_as_an_origin(tmp_path: Path) -> None:
    text = 'domain = "example.org"\n[https]\npublic_url = "https://devices.example.org:8443/"\n'
    config = parse_config(text, tmp_path, source="server.toml")
    assert config.https_public_url == "https://devices.example.org:8443"
    write_config(config)
    assert read_config(tmp_path).https_public_url == "https://devices.example.org:8443"
    empty = parse_config('domain = "example.org"\n[https]\npublic_url = ""\n', tmp_path, source="s")
    assert empty.https_public_url is None
