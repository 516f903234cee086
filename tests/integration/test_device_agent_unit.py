"""deploy/device-agent.service (issue 10): a unit systemd accepts, for `device-agent run`, with a
user of its own, a state directory and hardening. Checked with `systemd-analyze` itself."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "device-agent.service"
SHIPPED_BINARY = "/opt/xmpp-device-pairing/bin/device-agent"


@pytest.fixture(autouse=True)
def systemd_analyze() -> None:
    """A missing tool is a failure, as for deploy/server-ext.service: .ci/run installs it."""
    assert shutil.which("systemd-analyze") is not None, (
        "systemd-analyze is missing: .ci/run installs the systemd package"
    )


def local_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's device-agent: `verify` checks that
    the command exists, and /opt is where an installation puts it, not a test."""
    text = UNIT.read_text()
    assert f"ExecStart={SHIPPED_BINARY} run" in text
    copy = tmp_path / "device-agent.service"
    copy.write_text(text.replace(SHIPPED_BINARY, str(Path(sys.executable).parent / "device-agent")))
    return copy


def test_systemd_accepts_the_unit_without_a_warning(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(local_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == ""


def test_the_unit_runs_as_its_own_user_in_its_state_directory_hardened(tmp_path: Path) -> None:
    settings = dict(
        line.split("=", 1)
        for line in UNIT.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert settings["DynamicUser"] == "yes" and settings["User"] == "device-agent"
    assert settings["StateDirectory"] == "device-agent"
    assert settings["Environment"] == "DEVICE_AGENT_STATE=%S/device-agent"
    assert settings["StateDirectoryMode"] == "0700" and settings["UMask"] == "0077"
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(local_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert found is not None, security.stdout + security.stderr
    # systemd's scale: 0 is fully hardened, 10 is unprotected; below 2 it calls "OK".
    assert float(found.group(1)) < 2.0, security.stdout
