"""A new server serves the web page by default and prints where (the README's one command)."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

from tests.integration.cli_support import BIN, free_port, run


def test_a_new_data_directory_serves_the_web_page_on_5443(tmp_path: Path) -> None:
    data = tmp_path / "server"
    env = {k: v for k, v in os.environ.items() if k != "SERVER_EXT_HTTPS_PORT"}
    result = subprocess.run(
        [str(BIN / "server-ext"), "--data-dir", str(data), "init", "--domain", "localhost"],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    settings = tomllib.loads((data / "server.toml").read_text())
    assert settings["https"]["port"] == 5443
    assert settings["https"]["host"] == "127.0.0.1"  # loopback unless the operator says so


def test_serve_prints_the_url_of_the_web_page(tmp_path: Path) -> None:
    data = tmp_path / "server"
    https_port = free_port()
    proc = subprocess.Popen(
        [
            str(BIN / "server-ext"), "--data-dir", str(data), "serve",
            "--port", str(free_port()), "--direct-tls-port", "0",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env={**os.environ, "SERVER_EXT_HTTPS_PORT": str(https_port)},
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        banner = []
        while not banner or not banner[-1].startswith("data:"):
            line = proc.stdout.readline()
            assert line, "serve ended"
            banner.append(line.strip())
        assert f"web page: https://127.0.0.1:{https_port}/" in "\n".join(banner)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    # Off again when asked: 0 turns the HTTPS face off for this run.
    result = run(
        "server-ext", "--data-dir", str(data), "serve", "--help",
    )  # fmt: skip
    assert "--https-port" in result.stdout


def test_port_0_turns_direct_tls_and_https_off_for_the_run(tmp_path: Path) -> None:
    """``--direct-tls-port 0`` used to be dropped with the options not given, so serve
    listened on 5223 anyway (and failed when another server held it)."""
    data = tmp_path / "server"
    port = free_port()
    proc = subprocess.Popen(
        [
            str(BIN / "server-ext"), "--data-dir", str(data), "serve",
            "--port", str(port), "--direct-tls-port", "0", "--https-port", "0",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env={k: v for k, v in os.environ.items() if k != "SERVER_EXT_HTTPS_PORT"},
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        banner = []
        while not banner or not banner[-1].startswith("data:"):
            line = proc.stdout.readline()
            assert line, "serve ended"
            banner.append(line.strip())
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert banner[0] == f"listening on 127.0.0.1:{port} (STARTTLS)"
    assert not any("direct TLS" in line or "HTTPS" in line for line in banner), banner
