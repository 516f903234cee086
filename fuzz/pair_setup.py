"""Fuzz LAN pair-setup: frames into both session state machines (device and user).

Nothing a peer on the LAN sends may raise, and nothing may get past the SRP proof without
the code: no pairing, offer, certificate or confirmation event can come from random bytes.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from pairing.protocol.pair_messages import DeviceHello
    from pairing.protocol.pair_setup import (
        CertificateReceived,
        DeviceSession,
        EnrollmentFinished,
        OfferReceived,
        Paired,
        RegistrationConfirmed,
        UserSession,
    )
    from pairing.protocol.setup_code import SetupLabel
    from pairing.protocol.srp import make_verifier

LABEL = SetupLabel.parse("XMPP-DP-SETUP:1/ABCDEFGHJK/WXYZ/31415926")
HELLO = DeviceHello(LABEL.device_id, LABEL.setup_hash, "Kitchen sensor", "kitchen")
# Making a verifier costs an SRP exponentiation: once, not per input.
VERIFIER = make_verifier("31415926", bytes(range(16)))
FORBIDDEN = (Paired, OfferReceived, CertificateReceived, RegistrationConfirmed, EnrollmentFinished)


def test_one_input(data: bytes) -> None:
    for session in (DeviceSession(HELLO, VERIFIER), UserSession()):
        for chunk in data.split(b"\xfe"):
            events = session.receive_data(chunk)
            assert not any(isinstance(e, FORBIDDEN) for e in events), events
            session.data_to_send()
            if isinstance(session, DeviceSession) and session.state.value == "setup-requested":
                session.accept_setup()


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
