"""The device's JSON state files: one helper, typed records, the formats of earlier versions."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from device_agent.enrollment import PENDING, SERVER, EnrollmentError, ServerSettings, pending
from device_agent.runtime import STATUS, AgentState, Status, read_status
from device_agent.setup_state import (
    ATTEMPTS,
    SETUP,
    AttemptCounter,
    SetupState,
    SetupStateError,
    Strikes,
)
from device_agent.state_files import StateFileError, StateFileMissing
from pairing.protocol.srp import Verifier

SETTINGS = ServerSettings("xmpp.example.org", 5222, "ab" * 32, "alice@example.org/bot")

# Each file exactly as the earlier, hand-written code wrote it: existing state directories
# must keep working, so these are read as they are and written back byte for byte.
EARLIER = {
    "server.json": json.dumps(
        {"host": "xmpp.example.org", "port": 5222, "fingerprint": "ab" * 32,
         "jid": "alice@example.org/bot"},
        indent=2,
    ),
    "setup.json": json.dumps(
        {"device_id": "ABCDEFGHJK", "setup_id": "WXYZ", "name": "Desk lamp",
         "resource": "lamp", "salt": "AAECAwQFBgcICQoLDA0ODw==", "verifier": "3q2+7w=="}
    ),
    "attempts.json": json.dumps({"failures": 3, "locked": False}),
    "status.json": json.dumps(
        {"state": "revoked", "reason": "this device was revoked: stolen",
         "at": "2025-01-02T03:04:05.678901+00:00"}
    ),
}  # fmt: skip


def earlier_dir(tmp_path: Path) -> Path:
    tmp_path.mkdir(exist_ok=True)
    for name, text in EARLIER.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_the_files_of_earlier_versions_are_read_as_they_are(tmp_path: Path) -> None:
    state = earlier_dir(tmp_path)
    assert ServerSettings.load(state) == SETTINGS
    setup = SetupState.load(state)
    assert (setup.device_id, setup.setup_id, setup.name, setup.resource) == (
        "ABCDEFGHJK",
        "WXYZ",
        "Desk lamp",
        "lamp",
    )
    assert setup.verifier == Verifier(bytes(range(16)), bytes.fromhex("deadbeef"))
    counter = AttemptCounter.load(state)
    assert (counter.failures, counter.locked) == (3, False)
    status = read_status(state)
    assert status == Status(
        AgentState.REVOKED,
        "this device was revoked: stolen",
        dt.datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC),
    )


def test_records_are_written_in_the_earlier_formats(tmp_path: Path) -> None:
    old = earlier_dir(tmp_path / "old")
    new = tmp_path / "new"
    SERVER.write(new, SERVER.read(old))
    SETUP.write(new, SETUP.read(old))
    ATTEMPTS.write(new, ATTEMPTS.read(old))
    STATUS.write(new, STATUS.read(old))
    for name, text in EARLIER.items():
        assert (new / name).read_text() == text, name


def test_a_counter_of_an_earlier_version_without_fields_counts_from_zero(tmp_path: Path) -> None:
    (tmp_path / "attempts.json").write_text("{}")
    assert ATTEMPTS.read(tmp_path) == Strikes(0, False)


def test_files_are_private_from_the_first_byte_and_replaced_whole(tmp_path: Path) -> None:
    state = tmp_path / "new" / "state"
    SERVER.write(state, SETTINGS)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "server.json").stat().st_mode) == 0o600
    PENDING.write(state, SETTINGS)
    assert pending(state) == SETTINGS
    counter = AttemptCounter.load(state)
    counter.record_failure(cap=2)
    counter.record_failure(cap=2)
    assert ATTEMPTS.read(state) == Strikes(2, True)
    assert stat.S_IMODE((state / "attempts.json").stat().st_mode) == 0o600
    assert sorted(p.name for p in state.iterdir()) == [
        "attempts.json",
        "enrollment-pending.json",
        "server.json",
    ]  # no temporary file left behind


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param(b"{", "is malformed", id="truncated"),
        pytest.param(b"\xff\xfe", "is malformed", id="not-utf8"),
        pytest.param(b"[1, 2]", "does not hold a JSON object", id="not-an-object"),
        pytest.param(b'{"host": "h", "port": "5222"}', "'port' must be an integer", id="type"),
        pytest.param(b'{"host": "h", "port": 1}', "'fingerprint' must be a string", id="absent"),
    ],
)
def test_a_malformed_file_is_one_clear_error_naming_it(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    (tmp_path / "server.json").write_bytes(content)
    with pytest.raises(StateFileError, match=problem) as info:
        ServerSettings.load(tmp_path)
    assert str(info.value).startswith(str(tmp_path / "server.json"))
    assert "\n" not in str(info.value)


def test_a_file_that_cannot_be_read_says_so(tmp_path: Path) -> None:
    (tmp_path / "status.json").mkdir()  # reading a directory fails whoever runs the test
    with pytest.raises(StateFileError, match=r"status\.json cannot be read"):
        read_status(tmp_path)


def test_a_missing_file_is_its_own_error_and_the_callers_say_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(StateFileMissing):
        SERVER.read(tmp_path)
    assert read_status(tmp_path) is None
    assert pending(tmp_path) is None
    assert AttemptCounter.load(tmp_path).failures == 0
    with pytest.raises(EnrollmentError, match="run `device-agent enroll`"):
        ServerSettings.load(tmp_path)
    with pytest.raises(SetupStateError, match="run `device-agent label`"):
        SetupState.load(tmp_path)
    PENDING.write(tmp_path, SETTINGS)
    with pytest.raises(EnrollmentError, match="did not finish"):
        ServerSettings.load(tmp_path)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param({"failures": "many"}, id="type"),
        pytest.param({"failures": 1, "locked": "no"}, id="flag"),
        pytest.param({"failures": True}, id="bool-is-no-count"),
    ],
)
def test_a_damaged_attempt_counter_keeps_the_device_locked(
    tmp_path: Path, damage: dict[str, Any]
) -> None:
    (tmp_path / "attempts.json").write_text(json.dumps(damage))
    with pytest.raises(SetupStateError, match="stays locked"):
        AttemptCounter.load(tmp_path)


def test_an_unknown_agent_state_is_malformed(tmp_path: Path) -> None:
    (tmp_path / "status.json").write_text(
        json.dumps({"state": "asleep", "reason": "", "at": "2025-01-02T03:04:05+00:00"})
    )
    with pytest.raises(StateFileError, match="unknown state 'asleep'"):
        read_status(tmp_path)
