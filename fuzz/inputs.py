"""Fuzz what people paste or scan: enrollment URIs, setup labels and codes, JIDs, server
addresses, and fleet CSV files. Each parser either returns a value or raises its own
documented error; nothing else may escape (no traceback for a user)."""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from pairing.errors import PairingError
    from pairing.lan.codebook import parse_codes
    from pairing.protocol.address import ServerAddress
    from pairing.protocol.jid import JID
    from pairing.protocol.setup_code import SetupCode, SetupLabel
    from pairing.protocol.uri import EnrollmentURI

SOURCE = Path("fleet.csv")


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    choice = fdp.ConsumeIntInRange(0, 5)
    if choice == 5:
        try:
            parse_codes(fdp.ConsumeBytes(fdp.remaining_bytes()), SOURCE)
        except PairingError:
            pass
        return
    text = fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
    parse = (
        EnrollmentURI.parse,
        SetupLabel.parse,
        SetupCode.parse,
        JID.parse,
        ServerAddress.parse,
    )[choice]
    try:
        parse(text)
    except PairingError:
        pass  # the documented refusals; any other exception is a crash the fuzzer reports


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
