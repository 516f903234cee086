"""A device installs only what it needs: the base package, in a venv of its own.

The package is installed without extras from this checkout into a fresh virtual environment
(pip resolves the base dependencies from the registry, as a device would); the three CLIs are
then run as processes from that venv.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = ("pyopenssl", "sqlite-utils", "scramp")
CAMERA_ONLY = ("pillow", "zxing-cpp")


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("base-install") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    return venv / "bin"


def run(bin_dir: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.timeout(900)
def test_the_base_install_has_no_server_or_camera_dependencies(base_venv: Path) -> None:
    listed = run(base_venv, "pip", "list", "--format=freeze", "--disable-pip-version-check")
    installed = {line.split("==")[0].lower() for line in listed.stdout.splitlines()}
    assert "xmpp-device-pairing" in installed
    assert installed.isdisjoint(SERVER_ONLY + CAMERA_ONLY), installed


@pytest.mark.timeout(900)
def test_the_device_agent_works_without_the_extras_and_names_what_is_missing(
    base_venv: Path, tmp_path: Path
) -> None:
    state = str(tmp_path / "device")
    made = run(base_venv, "device-agent", "--state-dir", state, "init", "--jid", "a@localhost/b")
    assert made.returncode == 0, made.stderr
    label = run(base_venv, "device-agent", "--state-dir", state, "label", "--resource", "r",
                "--name", "Sensor", "--json")  # fmt: skip
    assert label.returncode == 0, label.stderr
    png = tmp_path / "label.png"
    with_png = run(base_venv, "device-agent", "--state-dir", str(tmp_path / "other"), "label",
                   "--resource", "r", "--name", "n", "--png", str(png))  # fmt: skip
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n")
    scan = run(base_venv, "device-agent", "--state-dir", state, "enroll", "--qr-image", str(photo))
    for result in (with_png, scan):
        assert result.returncode == 1
        # One error line (enroll says "reading …" before it).
        (line,) = [x for x in result.stderr.splitlines() if x.startswith("Error")]
        assert "pip install 'xmpp-device-pairing[camera]'" in line, line
        assert "Traceback" not in result.stderr
    assert not png.exists()
    assert run(base_venv, "pairing", "--help").returncode == 0


@pytest.mark.timeout(900)
def test_server_ext_without_the_server_extra_says_what_to_install(
    base_venv: Path, tmp_path: Path
) -> None:
    result = run(base_venv, "server-ext", "--data-dir", str(tmp_path / "srv"), "serve")
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "pip install 'xmpp-device-pairing[server]'" in line
    assert not (tmp_path / "srv").exists()
