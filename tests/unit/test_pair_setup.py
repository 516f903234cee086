"""Pair-setup sessions back to back, with no sockets: the message flow, failures and fuzz."""

from __future__ import annotations

import random

import pytest

from pairing.errors import RemoteProtocolError
from pairing.protocol.frames import MAX_BODY, Frame, FrameDecoder
from pairing.protocol.identity import build_device_certificate, certificate_der, generate_key
from pairing.protocol.jid import JID
from pairing.protocol.pair_messages import (
    DeviceHello,
    EnrollmentOffer,
    EnrollmentResult,
    EnrollMode,
    FailureReason,
    FrameType,
)
from pairing.protocol.pair_setup import (
    CertificateReceived,
    DeviceSession,
    DeviceState,
    EnrollmentFinished,
    Event,
    NotExpectedByUser,
    OfferReceived,
    Paired,
    PairingFailed,
    ProtocolViolation,
    RegistrationConfirmed,
    SetupRequested,
    UserSession,
    UserState,
    run_back_to_back,
)
from pairing.protocol.setup_code import InvalidSetupCode, SetupCode, SetupLabel, setup_hash
from pairing.protocol.srp import make_verifier

LABEL = SetupLabel("ABCDEFGHJK", "WXYZ", SetupCode("31415926"))
HELLO = DeviceHello(LABEL.device_id, LABEL.setup_hash, "Kitchen sensor", "kitchen")
OFFER = EnrollmentOffer(
    JID.parse("alice@example.org/kitchen"), "127.0.0.1", 5222, "ab" * 32, EnrollMode.TOKEN, "T" * 32
)


def pair(code: str = "31415926") -> tuple[DeviceSession, UserSession, list[tuple[str, Event]]]:
    device = DeviceSession(HELLO, make_verifier(LABEL.code.digits))
    user = UserSession()
    log: list[tuple[str, Event]] = []

    def on_event(side: str, event: Event) -> None:
        log.append((side, event))
        if side == "user" and event.__class__.__name__ == "DeviceIntroduced":
            user.start_setup(code)
        if side == "device" and isinstance(event, SetupRequested):
            device.accept_setup()

    run_back_to_back(device, user, on_event)
    return device, user, log


def test_token_mode_flow() -> None:
    device, user, log = pair()
    assert [(s, type(e).__name__) for s, e in log] == [
        ("user", "DeviceIntroduced"),
        ("device", "SetupRequested"),
        ("device", "Paired"),
        ("user", "Paired"),
    ]
    user.send_offer(OFFER)
    events = device.receive_data(user.data_to_send())
    assert events == [OfferReceived(OFFER)]
    device.send_result(EnrollmentResult(True, JID.parse("alice@example.org/kitchen")))
    (finished,) = user.receive_data(device.data_to_send())
    assert finished == EnrollmentFinished(
        EnrollmentResult(True, JID.parse("alice@example.org/kitchen"))
    )
    assert device.state is DeviceState.DONE and user.state is UserState.DONE


def test_xep0257_mode_with_proof_of_possession() -> None:
    device, user, _ = pair()
    user.send_offer(
        EnrollmentOffer(OFFER.jid, OFFER.host, OFFER.port, OFFER.fingerprint, EnrollMode.XEP0257)
    )
    device.receive_data(user.data_to_send())
    key = generate_key()
    der = certificate_der(build_device_certificate(key, OFFER.jid))
    device.submit_certificate(der, key)
    assert user.receive_data(device.data_to_send()) == [CertificateReceived(der)]
    user.confirm_registered()
    assert device.receive_data(user.data_to_send()) == [RegistrationConfirmed()]


def test_a_certificate_signed_by_another_key_is_refused() -> None:
    device, user, _ = pair()
    user.send_offer(
        EnrollmentOffer(OFFER.jid, OFFER.host, OFFER.port, OFFER.fingerprint, EnrollMode.XEP0257)
    )
    device.receive_data(user.data_to_send())
    der = certificate_der(build_device_certificate(generate_key(), OFFER.jid))
    device.submit_certificate(der, generate_key())  # not the certificate's key
    (event,) = user.receive_data(device.data_to_send())
    assert isinstance(event, ProtocolViolation)
    assert "holds" in event.text


def test_wrong_code_fails_on_both_sides() -> None:
    device, user, log = pair("27182818")
    assert ("user", PairingFailed(FailureReason.WRONG_CODE)) in log
    assert ("device", PairingFailed(FailureReason.WRONG_CODE)) in log
    assert device.failed and user.failed


def test_not_expected() -> None:
    device = DeviceSession(HELLO, make_verifier("31415926"))
    user = UserSession()
    user.receive_data(device.data_to_send())
    user.reject()
    assert device.receive_data(user.data_to_send()) == [NotExpectedByUser()]


def test_busy_or_locked_device_refuses_before_srp() -> None:
    device = DeviceSession(HELLO, make_verifier("31415926"))
    user = UserSession()
    user.receive_data(device.data_to_send())
    user.start_setup("31415926")
    device.receive_data(user.data_to_send())
    device.refuse(FailureReason.LOCKED_OUT)
    assert user.receive_data(device.data_to_send()) == [PairingFailed(FailureReason.LOCKED_OUT)]


def test_out_of_order_frames_are_protocol_errors() -> None:
    device = DeviceSession(HELLO, make_verifier("31415926"))
    device.data_to_send()
    (event,) = device.receive_data(Frame(FrameType.SETUP_PROOF, b"\0" * 448).encode())
    assert isinstance(event, ProtocolViolation)
    assert (
        device.data_to_send()
        == Frame(FrameType.SETUP_FAILED, bytes([FailureReason.PROTOCOL_ERROR])).encode()
    )
    assert device.receive_data(b"anything") == []


def test_tampered_ciphertext_is_refused() -> None:
    device, user, _ = pair()
    user.send_offer(OFFER)
    data = bytearray(user.data_to_send())
    data[-1] ^= 1
    (event,) = device.receive_data(bytes(data))
    assert isinstance(event, ProtocolViolation)
    assert "authentication" in event.text


def test_oversized_frame_is_refused_before_buffering() -> None:
    decoder = FrameDecoder()
    with pytest.raises(RemoteProtocolError):
        decoder.feed(bytes([1]) + (MAX_BODY + 1).to_bytes(2, "big"))


@pytest.mark.parametrize("seed", range(200))
def test_fuzzed_frames_raise_only_protocol_errors(seed: int) -> None:
    """Random frames never raise, and never get past the cryptography."""
    rng = random.Random(seed)
    device = DeviceSession(HELLO, make_verifier("31415926"))
    user = UserSession()
    forbidden = (
        Paired,
        OfferReceived,
        CertificateReceived,
        RegistrationConfirmed,
        EnrollmentFinished,
    )
    for session in (device, user):
        for _ in range(5):
            frame_type = rng.choice([*list(FrameType), rng.randrange(256)])
            body = rng.randbytes(rng.choice([0, 1, 4, 15, 64, 400, 448, 2000]))
            events = session.receive_data(bytes([frame_type]) + len(body).to_bytes(2, "big") + body)
            assert not any(isinstance(e, forbidden) for e in events)
            if session is device and device.state.value == "setup-requested":
                device.accept_setup()


def test_setup_codes() -> None:
    codes = {SetupCode.generate().digits for _ in range(500)}
    assert len(codes) > 490
    for trivial in ("11111111", "12345678", "87654321", "23456789", "00000000"):
        with pytest.raises(InvalidSetupCode):
            SetupCode(trivial)
    assert str(SetupCode.parse("314 15 926")) == "314-15-926"
    assert "314" not in repr(SetupCode("31415926"))


def test_labels_round_trip_and_hash_hides_the_code() -> None:
    label = SetupLabel.generate()
    assert SetupLabel.parse(label.payload()) == label
    assert label.setup_hash == setup_hash(label.setup_id, label.device_id)
    # The advertised hash is made of the two ids alone: the same ids with any other code give
    # the same hash, so hearing it cannot help test a guessed code.
    other = SetupLabel(label.device_id, label.setup_id, SetupCode("27182818"))
    assert other.setup_hash == label.setup_hash
    assert SetupLabel.generate().setup_hash != label.setup_hash  # and it does tell labels apart
    with pytest.raises(InvalidSetupCode):
        SetupLabel.parse("XMPP-DP-SETUP:2/ABCDEFGHJK/WXYZ/31415926")


def test_docs_state_table_matches_the_code() -> None:
    from pathlib import Path

    from pairing.protocol.pair_setup import state_table_markdown

    docs = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    assert state_table_markdown() in docs


def test_window_advertises_reachable_addresses_only() -> None:
    from pairing.lan.discovery import addresses_to_advertise

    assert addresses_to_advertise("0.0.0.0", ["127.0.0.1"]) == ["127.0.0.1"]
    assert addresses_to_advertise("192.0.2.9", None) == ["192.0.2.9"]
    # What "all interfaces" finds is tested on a network whose addresses the test made:
    # tests/integration/test_lan_addresses.py.
