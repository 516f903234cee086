"""Running the CLIs as real processes, and a server-ext process to run them against."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(
    *args: str, env: dict[str, str] | None = None, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    if ok and result.returncode != 0:
        raise AssertionError(f"{args} failed: {result.stdout}{result.stderr}")
    return result


def init_server(data: Path | str, domain: str = "localhost") -> None:
    """``server-ext init``: every other command needs a data directory set up by it."""
    run("server-ext", "--data-dir", str(data), "init", "--domain", domain)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, int, str]]:
    data = tmp_path / "server"
    password = tmp_path / "pw"
    password.write_text("s3cret pass\n")
    init_server(data)
    run(
        "server-ext",
        "--data-dir",
        str(data),
        "user",
        "add",
        "alice",
        "--password-file",
        str(password),
    )
    fp = run("server-ext", "--data-dir", str(data), "fingerprint", "--json")
    pin = json.loads(fp.stdout)["sha256"]
    port = free_port()
    proc = subprocess.Popen(
        [
            str(BIN / "server-ext"),
            "--data-dir",
            str(data),
            "serve",
            "--port",
            str(port),
            "--direct-tls-port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    banner = proc.stdout.readline()
    assert banner.startswith(f"listening on 127.0.0.1:{port}"), banner
    try:
        yield data, port, pin
    finally:
        proc.terminate()
        proc.wait(timeout=10)
