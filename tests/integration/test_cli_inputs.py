"""Hostile and broken inputs to the CLIs: one clear line and a non-zero exit, never a
traceback, never gigabytes, never half-written state (issue 8, "Inputs" and "Tracebacks").
"""

from __future__ import annotations

import codecs
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.cli_support import BIN
from tests.support.images import blank_png

#: A child that decodes the 9000 x 9000 image takes about 600 MB; refusing it, about 50.
RSS_CEILING_KB = 200 * 1024


def run_measured(cmd: list[str], tmp_path: Path) -> tuple[int, str, int]:
    """Run ``cmd``; its exit code, its stderr and its own peak RSS in KiB (wait4)."""
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, err.read_text(), usage.ru_maxrss


def assert_one_clear_line(code: int, stderr: str, *needles: str) -> None:
    assert code != 0
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if not line.startswith("reading ")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    for needle in needles:
        assert needle in lines[0], stderr


def pairing_cmd(tmp_path: Path) -> list[str]:
    """The user's CLI, pointed at a server that does not exist: inputs are checked first."""
    (tmp_path / "pw").write_text("unused\n")
    return [
        str(BIN / "pairing"),
        "--jid",
        "alice@localhost",
        "--server",
        "127.0.0.1:1",
        "--pin",
        "ab" * 32,
        "--password-file",
        str(tmp_path / "pw"),
    ]


@pytest.fixture(scope="module")
def hostile_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("images")
    return {
        # 400 megapixels in 48 KB: over Pillow's own bomb limit (a traceback before).
        "bomb": blank_png(folder / "bomb.png", 20000, 20000),
        # 81 megapixels of RGB, under Pillow's limit: decoded whole before (600 MB).
        "huge": blank_png(folder / "huge.png", 9000, 9000, rgb=True),
    }


@pytest.mark.parametrize("image", ["bomb", "huge"])
@pytest.mark.parametrize("cli", ["device-agent enroll", "pairing listen"])
def test_oversized_images_are_refused_before_decoding(
    hostile_images: dict[str, Path], tmp_path: Path, image: str, cli: str
) -> None:
    path = hostile_images[image]
    if cli == "device-agent enroll":
        cmd = [str(BIN / "device-agent"), "--state-dir", str(tmp_path / "state")]
        cmd += ["enroll", "--qr-image", str(path)]
    else:
        cmd = [*pairing_cmd(tmp_path), "listen", "--qr", str(path)]
    code, stderr, peak_kb = run_measured(cmd, tmp_path)
    assert_one_clear_line(code, stderr, str(path), "too large")
    assert peak_kb < RSS_CEILING_KB, f"{peak_kb} KiB"
    assert not (tmp_path / "state" / "device.key").exists()


def test_a_photo_larger_than_the_file_cap_is_not_read(tmp_path: Path) -> None:
    from pairing.qr import MAX_IMAGE_BYTES

    photo = tmp_path / "photo.jpg"
    with photo.open("wb") as handle:  # sparse: costs no disk
        handle.truncate(MAX_IMAGE_BYTES + 1)
    code, stderr, _ = run_measured(
        [
            str(BIN / "device-agent"),
            "--state-dir",
            str(tmp_path),
            "enroll",
            "--qr-image",
            str(photo),
        ],
        tmp_path,
    )
    assert_one_clear_line(code, stderr, "larger than 32 MiB")


DEVICE_A = "ABCDEFGHJK"
DEVICE_B = "MNPQRSTUVW"


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        pytest.param(
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10",
            [":3: binary data"],
            id="binary",
        ),
        pytest.param(
            f"device_id,code\n{DEVICE_A},314-15-926\n".encode("utf-16"),
            ["UTF-16", "UTF-8"],
            id="utf-16",
        ),
        pytest.param(
            f"device_id,code\n{DEVICE_A},314-15-926\n".encode() + "Gérard,1\n".encode("latin-1"),
            [":3: not UTF-8"],
            id="latin-1",
        ),
        pytest.param(
            b"device_id,code\n" + b"A" * 200_000 + b",314-15-926\n",
            [":2:"],
            id="field-over-csv-limit",
        ),
        pytest.param(
            b"device_id,code\n" + b"A" * 5_000 + b",314-15-926\n",
            [":2: a field is 5000 characters long"],
            id="long-field",
        ),
        pytest.param(
            f"device_id,code\n{DEVICE_A},314-15-926\n{DEVICE_B},271-82-818\n"
            f"{DEVICE_A.lower()},314-15-926\n".encode(),
            [f":4: device {DEVICE_A} is listed twice (first on line 2)"],
            id="duplicate-device",
        ),
        pytest.param(
            f"{DEVICE_A},314-15-926\nkitchen sensor,271-82-818\n".encode(),
            [":2: a device id is 10 characters"],
            id="bad-device-id",
        ),
        pytest.param(
            f"{DEVICE_A},314-15-926\n{DEVICE_B},1234\n".encode(),
            [":2: a setup code has eight digits"],
            id="bad-code",
        ),
        pytest.param(
            f"{DEVICE_A}\n".encode(),
            [":1: a row needs a device id and a code"],
            id="one-column",
        ),
    ],
)
def test_a_broken_fleet_csv_is_one_line_naming_the_line(
    tmp_path: Path, content: bytes, needles: list[str]
) -> None:
    fleet = tmp_path / "fleet.csv"
    fleet.write_bytes(content)
    result = subprocess.run(
        [*pairing_cmd(tmp_path), "listen", "--codes", str(fleet), "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert_one_clear_line(result.returncode, result.stderr, str(fleet), *needles)


def test_a_utf8_fleet_csv_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    from pairing.lan.codebook import CodeBook

    path = tmp_path / "fleet.csv"
    path.write_bytes(codecs.BOM_UTF8 + f"device_id,code\n{DEVICE_A},314-15-926\n".encode())
    book = CodeBook()
    book.load_csv(path)
    assert list(book.by_device) == [DEVICE_A]


# --- read-only state (issue 8, "Tracebacks") ----------------------------------------------


def read_only(folder: Path, cmd: list[str]) -> list[str]:
    """``cmd`` in a private mount namespace where ``folder`` is a read-only bind mount.

    A read-only mount is what an embedded device's state looks like when its storage is
    mounted read-only, and it binds root too (EROFS), unlike file modes, which root ignores.
    The mount vanishes with the process, so nothing is left behind even if the test fails.
    """
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to make a read-only mount")
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(folder), *cmd]


def label_cmd(state: Path, *extra: str) -> list[str]:
    return [str(BIN / "device-agent"), "--state-dir", str(state), "label", *extra]


def run_cmd(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_label_in_a_read_only_state_dir_is_one_line(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    result = run_cmd(read_only(state, label_cmd(state, "--json")))
    if "mount" in result.stderr and "Error:" not in result.stderr:
        pytest.skip(f"cannot make a read-only mount here: {result.stderr.strip()}")
    assert_one_clear_line(result.returncode, result.stderr, str(state), "Read-only file system")
    assert result.stdout == ""  # no code was shown for a label that does not exist
    assert list(state.iterdir()) == []


def test_a_new_label_that_cannot_be_stored_leaves_the_old_one_and_no_png(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    old = json.loads(run_cmd(label_cmd(state, "--json")).stdout)
    before = (state / "setup.json").read_bytes()
    png = tmp_path / "label.png"
    result = run_cmd(read_only(state, label_cmd(state, "--reset", "--png", str(png))))
    assert_one_clear_line(result.returncode, result.stderr, "Read-only file system")
    assert old["code"] not in result.stdout and "setup code" not in result.stdout
    assert (state / "setup.json").read_bytes() == before
    assert not png.exists()


def test_a_label_png_that_cannot_be_written_changes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    run_cmd(label_cmd(state, "--json"))
    before = (state / "setup.json").read_bytes()
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    result = run_cmd(
        read_only(shelf, label_cmd(state, "--reset", "--png", str(shelf / "label.png")))
    )
    assert_one_clear_line(
        result.returncode, result.stderr, str(shelf / "label.png"), "the label is unchanged"
    )
    assert (state / "setup.json").read_bytes() == before  # the printed label still works


def device_agent(state: Path, *args: str) -> list[str]:
    return [str(BIN / "device-agent"), "--state-dir", str(state), *args]


def enrolled_state(tmp_path: Path) -> Path:
    """An identity and a server.json, as an enrolled device has (no server needed)."""
    state = tmp_path / "bot"
    result = run_cmd(device_agent(state, "init", "--jid", "alice@localhost/bot"))
    assert result.returncode == 0, result.stderr
    settings = {
        "host": "127.0.0.1",
        "port": 1,
        "fingerprint": "ab" * 32,
        "jid": "alice@localhost/bot",
    }
    (state / "server.json").write_text(json.dumps(settings))
    return state


@pytest.mark.parametrize(
    ("name", "content", "command", "needle"),
    [
        pytest.param("status.json", "{", ["status"], "is malformed", id="status-truncated"),
        pytest.param(
            "status.json",
            '{"state": "asleep", "reason": "", "at": "2025-01-02T03:04:05+00:00"}',
            ["status"],
            "unknown state 'asleep'",
            id="status-unknown-state",
        ),
        pytest.param("server.json", "[]", ["run"], "does not hold a JSON object", id="server"),
        pytest.param(
            "server.json", '{"host": "h", "port": "x"}', ["login"], "'port'", id="server-field"
        ),
    ],
)
def test_a_damaged_state_file_is_one_line_naming_it(
    tmp_path: Path, name: str, content: str, command: list[str], needle: str
) -> None:
    """Issue 9: one state-file helper, one clear error (status.json was silently ignored)."""
    state = enrolled_state(tmp_path)
    (state / name).write_text(content)
    result = run_cmd(device_agent(state, *command))
    assert_one_clear_line(result.returncode, result.stderr, str(state / name), needle)


@pytest.mark.parametrize("server", ["[::1", "example.org:", "example.org:0", "a:b:c"])
def test_a_server_address_that_is_not_one_is_one_line(tmp_path: Path, server: str) -> None:
    cmd = pairing_cmd(tmp_path)
    cmd[cmd.index("--server") + 1] = server
    result = run_cmd([*cmd, "certs", "list"])
    assert_one_clear_line(result.returncode, result.stderr, repr(server), "not a server address")


def test_a_file_that_is_no_certificate_is_refused_before_connecting(tmp_path: Path) -> None:
    """The PEM is parsed once, where it enters, before the password or the server is used
    (the server in ``pairing_cmd`` does not exist: reaching for it would say so)."""
    junk = tmp_path / "device.crt"
    junk.write_text(
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
    )
    result = run_cmd([*pairing_cmd(tmp_path), "certs", "add", "bot", str(junk)])
    assert_one_clear_line(result.returncode, result.stderr, "cannot be parsed")
