"""Write the seed corpora the fuzzers start from (``python fuzz/seeds.py``): valid inputs that
reach deep states quickly, so that a short CI run mutates real sessions, not empty bytes."""

from __future__ import annotations

from pathlib import Path

from pairing.protocol.pair_messages import DeviceHello
from pairing.protocol.pair_setup import DeviceIntroduced, DeviceSession, SetupRequested, UserSession
from pairing.protocol.setup_code import SetupLabel
from pairing.protocol.srp import make_verifier

CORPUS = Path(__file__).parent / "corpus"
SPLIT = b"\xfe"  # the harnesses cut their input into chunks here
HEADER = (
    b"<?xml version='1.0'?><stream:stream to='example.org' version='1.0' xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams'>"
)
STARTTLS = b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
AUTH = b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHB3</auth>"
BIND = (
    b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
    b"<resource>r</resource></bind></iq>"
)
STANZAS = (
    b"<message to='bob@example.org' type='chat'><body>hi &amp; &#x1F600;</body></message>"
    b"<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq><presence/>"
)


def stream_seeds() -> dict[str, bytes]:
    secured = [HEADER, STARTTLS, HEADER]
    return {
        "full-session": SPLIT.join([*secured, AUTH, HEADER, BIND, STANZAS, b"</stream:stream>"]),
        "header-only": HEADER,
        "doctype": b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]>" + HEADER,
        "starttls": SPLIT.join([HEADER, STARTTLS]),
        "sasl-exchange": SPLIT.join(
            [
                *secured,
                b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'/>",
                b"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>=</response>",
                b"<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
            ]
        ),
        "utf-8": SPLIT.join([HEADER, "<message><body>\u00e9\u4e2d</body></message>".encode()]),
        # XEP-0198 after bind: enable, stanzas, an ack request and an ack.
        "stream-management": SPLIT.join(
            [
                *secured,
                AUTH,
                HEADER,
                BIND,
                b"<enable xmlns='urn:xmpp:sm:3' resume='true'/>",
                STANZAS,
                b"<r xmlns='urn:xmpp:sm:3'/><a xmlns='urn:xmpp:sm:3' h='0'/>",
                b"</stream:stream>",
            ]
        ),
    }


def pair_setup_seeds() -> dict[str, bytes]:
    """What each side of a real pairing receives, up to the start of the encrypted part."""
    label = SetupLabel.parse("XMPP-DP-SETUP:1/ABCDEFGHJK/WXYZ/31415926")
    hello = DeviceHello(label.device_id, label.setup_hash, "Kitchen sensor", "kitchen")
    device = DeviceSession(hello, make_verifier("31415926", bytes(range(16))))
    user = UserSession()
    to_user: list[bytes] = []
    to_device: list[bytes] = []
    for _ in range(6):
        data = device.data_to_send()
        if data:
            to_user.append(data)
            for event in user.receive_data(data):
                if isinstance(event, DeviceIntroduced):
                    user.start_setup("31415926")
        data = user.data_to_send()
        if data:
            to_device.append(data)
            for event in device.receive_data(data):
                if isinstance(event, SetupRequested):
                    device.accept_setup()
    seeds = {f"to-user-{i}": SPLIT.join(to_user[: i + 1]) for i in range(len(to_user))}
    seeds.update({f"to-device-{i}": SPLIT.join(to_device[: i + 1]) for i in range(len(to_device))})
    return seeds


def inputs_seeds() -> dict[str, bytes]:
    # The first byte picks the parser (FuzzedDataProvider's ConsumeIntInRange(0, 5)).
    texts = [
        "XMPP-DP:1/ABCDEFGHIJKLMNOPQRSTUVWXYZ234567/"
        + "A" * 52
        + "/LOCALHOST/5222/ALICE%40LOCALHOST/BOT",
        "XMPP-DP-SETUP:1/ABCDEFGHJK/WXYZ/31415926",
        "314-15-926",
        "alice@example.org/bot",
        "[::1]:5222",
    ]
    seeds = {f"parser-{i}": bytes([i]) + text.encode() for i, text in enumerate(texts)}
    seeds["fleet-csv"] = bytes([5]) + b"device_id,code\nABCDEFGHJK,314-15-926\n"
    return seeds


def main() -> None:
    for name, seeds in (
        ("stream", stream_seeds()),
        ("pair_setup", pair_setup_seeds()),
        ("inputs", inputs_seeds()),
    ):
        folder = CORPUS / name
        folder.mkdir(parents=True, exist_ok=True)
        for seed, data in seeds.items():
            (folder / seed).write_bytes(data)


if __name__ == "__main__":
    main()
