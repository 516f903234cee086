"""deploy/server-ext.service, checked by systemd's own tools (``systemd-analyze``).

`systemd-analyze verify` loads the unit as systemd would and reports unknown keys, bad values
and a missing executable; it needs no running systemd, so it works in a container. The unit
is checked as shipped except for the install path of the executable, which is pointed at the
``server-ext`` of the environment under test (verify insists that it exists). `systemd-analyze
security --offline` scores the sandboxing. `.ci/run` installs systemd when the tool is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.cli_support import BIN

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "server-ext.service"
INSTALLED = "/opt/server-ext/bin/server-ext"


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED} serve" in text
    checked = tmp_path / "server-ext.service"
    checked.write_text(text.replace(INSTALLED, str(BIN / "server-ext")))
    return checked


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    assert tool is not None, "systemd-analyze is missing: .ci/run installs the systemd package"
    return subprocess.run(
        [tool, *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


def test_systemd_verifies_the_unit_without_a_warning(unit: Path) -> None:
    result = analyze("verify", "--man=no", str(unit))
    assert result.returncode == 0, result.stderr
    # verify exits 0 even for an unknown key ("ignoring"): any line it prints is a finding.
    assert result.stderr.strip() == "" and result.stdout.strip() == "", result.stderr


def test_the_check_would_catch_a_misspelt_hardening_option(unit: Path) -> None:
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSystm=strict"))
    result = analyze("verify", "--man=no", str(unit))
    assert "Unknown key" in result.stderr


def test_the_unit_is_sandboxed(unit: Path) -> None:
    text = UNIT.read_text()
    settings = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and line[0].isalpha()
    )
    assert settings["ProtectSystem"] == "strict"
    assert settings["PrivateTmp"] == settings["NoNewPrivileges"] == "yes"
    assert settings["CapabilityBoundingSet"] == ""  # ports 5222/5223 need no capability
    assert settings["StateDirectory"] == "server-ext"
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"  # SIGHUP reloads TLS
    assert settings["User"] == "server-ext" and "DynamicUser" not in settings
    result = analyze("security", "--offline=yes", str(unit))
    level = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert level is not None, result.stdout + result.stderr
    assert float(level.group(1)) <= 2.0, result.stdout  # systemd calls < 2 "OK"
