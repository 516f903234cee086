"""SRP-6a for pair-setup: RFC 5054 vectors for the maths, our own for the fixed widths."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from srptools import SRPContext
from srptools import constants as srptools_constants
from srptools.constants import PRIME_1024, PRIME_1024_GEN

from pairing.protocol import srp
from pairing.protocol.srp import SRPClient, SRPError, SRPServer, make_verifier, pad


def h(text: str) -> int:
    return int(text.replace(" ", "").replace("\n", ""), 16)


# RFC 5054 Appendix B (1024-bit group, SHA-1, I = "alice", P = "password123").
RFC = {
    "s": h("BEB25379 D1A8581E B5A72767 3A2441EE"),
    "k": h("7556AA04 5AEF2CDD 07ABAF0F 665C3E81 8913186F"),
    "x": h("94B7555A ABE9127C C58CCF49 93DB6CF8 4D16C124"),
    "v": h(
        "7E273DE8 696FFC4F 4E337D05 B4B375BE B0DDE156 9E8FA00A 9886D812"
        "9BADA1F1 822223CA 1A605B53 0E379BA4 729FDC59 F105B478 7E5186F5"
        "C671085A 1447B52A 48CF1970 B4FB6F84 00BBF4CE BFBB1681 52E08AB5"
        "EA53D15C 1AFF87B2 B9DA6E04 E058AD51 CC72BFC9 033B564E 26480D78"
        "E955A5E2 9E7AB245 DB2BE315 E2099AFB"
    ),
    "a": h("60975527 035CF2AD 1989806F 0407210B C81EDC04 E2762A56 AFD529DD DA2D4393"),
    "b": h("E487CB59 D31AC550 471E81F0 0F6928E0 1DDA08E9 74A004F4 9E61F5D1 05284D20"),
    "A": h(
        "61D5E490 F6F1B795 47B0704C 436F523D D0E560F0 C64115BB 72557EC4"
        "4352E890 3211C046 92272D8B 2D1A5358 A2CF1B6E 0BFCF99F 921530EC"
        "8E393561 79EAE45E 42BA92AE ACED8251 71E1E8B9 AF6D9C03 E1327F44"
        "BE087EF0 6530E69F 66615261 EEF54073 CA11CF58 58F0EDFD FE15EFEA"
        "B349EF5D 76988A36 72FAC47B 0769447B"
    ),
    "B": h(
        "BD0C6151 2C692C0C B6D041FA 01BB152D 4916A1E7 7AF46AE1 05393011"
        "BAF38964 DC46A067 0DD125B9 5A981652 236F99D9 B681CBF8 7837EC99"
        "6C6DA044 53728610 D0C6DDB5 8B318885 D7D82C7F 8DEB75CE 7BD4FBAA"
        "37089E6F 9C6059F3 88838E7A 00030B33 1EB76840 910440B1 B27AAEAE"
        "EB4012B7 D7665238 A8E3FB00 4B117B58"
    ),
    "u": h("CE38B959 3487DA98 554ED47D 70A7AE5F 462EF019"),
    "S": h(
        "B0DC82BA BCF30674 AE450C02 87745E79 90A3381F 63B387AA F271A10D"
        "233861E3 59B48220 F7C4693C 9AE12B0A 6F67809F 0876E2D0 13800D6C"
        "41BB59B6 D5979B5C 00A172B4 A2A5903A 0BDCAF8A 709585EB 2AFAFA8F"
        "3499B200 210DCC1F 10EB3394 3CD67FC8 8A2F39A4 BE5BEC4E C0A3212D"
        "C346D7E4 74B29EDE 8A469FFE CA686E5A"
    ),
}


def test_rfc5054_appendix_b_vectors() -> None:
    """The group arithmetic srptools does for us, against RFC 5054 Appendix B."""
    ctx = SRPContext(
        "alice", "password123", prime=PRIME_1024, generator=PRIME_1024_GEN, hash_func=hashlib.sha1
    )
    x = ctx.get_common_password_hash(RFC["s"])
    assert x == RFC["x"]
    assert ctx._mult == RFC["k"]
    v = ctx.get_common_password_verifier(x)
    assert v == RFC["v"]
    assert ctx.get_client_public(client_private=RFC["a"]) == RFC["A"]
    assert ctx.get_server_public(password_verifier=v, server_private=RFC["b"]) == RFC["B"]
    u = ctx.get_common_secret(RFC["B"], RFC["A"])
    assert u == RFC["u"]
    assert (
        ctx.get_client_premaster_secret(
            password_hash=x, server_public=RFC["B"], client_private=RFC["a"], common_secret=u
        )
        == RFC["S"]
    )
    assert (
        ctx.get_server_premaster_secret(
            password_verifier=v, server_private=RFC["b"], client_public=RFC["A"], common_secret=u
        )
        == RFC["S"]
    )


# Our own vectors (3072-bit group, SHA-512, code "31415926", salt 00..0f, b = 0x1234567890abcdef),
# chosen so that the salt, then A (a = 0x3e8), then S (a = 0x1027) begin with a zero byte. They
# pin the fixed-width encodings: a minimal-length encoding gives a different verifier, K, M1
# and M2. The verifier and every handshake without a leading zero are checked against pysrp
# (an independent SRP-6a implementation) below.
CODE = "31415926"
SALT = bytes(range(16))
B_PRIVATE = 0x1234567890ABCDEF
OURS = [
    (
        0x3E8,
        "e093fc0864671eaf10997e89851159d5",
        "7fe2c013e9c8a1390d7ef327ed02b9a6",
        "000adcc50dbbdf6fb026c81a6324b709",
    ),
    (
        0x1027,
        "de5a585dd0db4132333a7380b3cb8f15",
        "414f6a4dc4eaef06cc73a374bd628cae",
        "295d1c9d5601a72d5730e56d91a6712b",
    ),
]


def test_verifier_vector() -> None:
    assert make_verifier(CODE, SALT).verifier.hex().startswith("ce7c6319ab8db2c590c2e86614b3fd0d")


@pytest.mark.parametrize(("a", "key", "m1", "m2"), OURS)
def test_fixed_width_vectors_with_leading_zero_bytes(a: int, key: str, m1: str, m2: str) -> None:
    server = SRPServer(make_verifier(CODE, SALT), private=B_PRIVATE)
    client = SRPClient(CODE, private=a)
    proof = client.respond(server.salt, server.public)
    confirmation, server_key = server.verify(client.public, proof)
    assert client.verify(confirmation) == server_key
    assert (server_key.hex()[:32], proof.hex()[:32], confirmation.hex()[:32]) == (key, m1, m2)


def test_the_leading_zero_cases_really_have_leading_zeros() -> None:
    assert SALT[0] == 0
    assert SRPClient(CODE, private=0x3E8).public[0] == 0
    server = SRPServer(make_verifier(CODE, SALT), private=B_PRIVATE)
    client = SRPClient(CODE, private=0x1027)
    a_pub = int.from_bytes(client.public, "big")
    b_pub = int.from_bytes(server.public, "big")
    u = srp._GROUP.get_common_secret(b_pub, a_pub)
    v = int.from_bytes(make_verifier(CODE, SALT).verifier, "big")
    premaster = srp._GROUP.get_server_premaster_secret(
        password_verifier=v, server_private=B_PRIVATE, client_public=a_pub, common_secret=u
    )
    assert pad(premaster)[0] == 0
    minimal = hashlib.sha512(premaster.to_bytes((premaster.bit_length() + 7) // 8, "big")).digest()
    assert minimal != srp.session_key(premaster)


def test_wrong_code_fails_at_the_device() -> None:
    server = SRPServer(make_verifier("27182818"))
    client = SRPClient("27182819")
    proof = client.respond(server.salt, server.public)
    with pytest.raises(SRPError, match="does not match"):
        server.verify(client.public, proof)


@pytest.mark.parametrize("bad", [b"\0" * 384, srp.pad(srp.N)[:384], b"\1" * 10])
def test_degenerate_public_values_are_refused(bad: bytes) -> None:
    server = SRPServer(make_verifier(CODE))
    with pytest.raises(SRPError):
        server.verify(bad, b"\0" * 64)
    with pytest.raises(SRPError):
        SRPClient(CODE).respond(server.salt, bad)


def test_a_forged_server_proof_is_refused() -> None:
    server = SRPServer(make_verifier(CODE))
    client = SRPClient(CODE)
    client.respond(server.salt, server.public)
    with pytest.raises(SRPError):
        client.verify(b"\0" * 64)


# --- against an independent implementation ------------------------------------------------


@pytest.fixture
def pysrp() -> Iterator[Any]:
    """pysrp (the ``srp`` package, pure-Python module) in RFC 5054 mode: k, u padded."""
    from srp import _pysrp as independent

    independent.rfc5054_enable(True)
    yield independent
    independent.rfc5054_enable(False)


@pytest.mark.parametrize("salt", [SALT, bytes(range(1, 17)), b"\0\0" + bytes(14)])
def test_the_verifier_matches_an_independent_implementation(pysrp: Any, salt: bytes) -> None:
    """x = H(salt | H(I:P)) with the salt's 16 bytes, leading zeros included (RFC 5054 §2.4)."""
    x = pysrp.gen_x(hashlib.sha512, salt, srp.USERNAME, CODE)
    assert make_verifier(CODE, salt).verifier == pad(pow(srp.G, x, srp.N))


def group(pysrp: Any) -> dict[str, Any]:
    """RFC 5054 Appendix A's 3072-bit group with SHA-512, as pysrp takes it."""
    return {
        "hash_alg": pysrp.SHA512,
        "ng_type": pysrp.NG_CUSTOM,
        "n_hex": srptools_constants.PRIME_3072,
        "g_hex": srptools_constants.PRIME_3072_GEN,
    }


def _no_leading_zeros(*values: bytes) -> bool:
    return all(len(v) == srp.N_BYTES and v[0] != 0 for v in values)


def test_a_pysrp_user_pairs_with_our_device(pysrp: Any) -> None:
    for seed in range(1, 50):
        verifier = make_verifier(CODE, hashlib.sha256(bytes([seed])).digest()[:16])
        server = SRPServer(verifier)
        user = pysrp.User(
            srp.USERNAME,
            CODE,
            **group(pysrp),
            bytes_a=hashlib.shake_256(bytes([seed, 1])).digest(256),
        )
        _, a_min = user.start_authentication()
        a_pub = a_min.rjust(srp.N_BYTES, b"\0")
        if not _no_leading_zeros(a_pub, server.public):
            continue  # pysrp hashes minimal encodings; those cases are pinned above
        m1 = user.process_challenge(verifier.salt, server.public)
        m2, key = server.verify(a_pub, m1)
        user.verify_session(m2)
        assert user.authenticated() and user.get_session_key() == key
        return
    raise AssertionError("no handshake without leading zeros in 50 tries")


def test_our_user_pairs_with_a_pysrp_device(pysrp: Any) -> None:
    salt = bytes(range(1, 17))
    verifier = make_verifier(CODE, salt)
    for _ in range(50):
        client = SRPClient(CODE)
        device = pysrp.Verifier(
            srp.USERNAME, salt, verifier.verifier, client.public, **group(pysrp)
        )
        _, b_min = device.get_challenge()
        b_pub = b_min.rjust(srp.N_BYTES, b"\0")
        m1 = client.respond(salt, b_pub)
        if not _no_leading_zeros(client.public, b_pub):
            continue  # pysrp hashes minimal encodings; those cases are pinned above
        m2 = device.verify_session(m1)
        assert m2 is not None, "pysrp refused our proof"
        assert client.verify(m2) == device.get_session_key()
        return
    raise AssertionError("no handshake without leading zeros in 50 tries")
