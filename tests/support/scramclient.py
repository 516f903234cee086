"""The client half of SCRAM (RFC 5802 §3), so tests can send exactly what they mean."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from tests.support.rawclient import RawClient


async def scram_login(
    client: RawClient, user: str, password: str, *, hash_name: str = "sha256", authzid: str = ""
) -> bytes:
    """Run SCRAM-SHA-1/256; returns the final <success/> or <failure/> bytes."""
    mechanism = "SCRAM-SHA-256" if hash_name == "sha256" else "SCRAM-SHA-1"
    gs2 = f"n,a={authzid}," if authzid else "n,,"
    nonce = secrets.token_urlsafe(18)
    first_bare = f"n={user},r={nonce}"
    reply = await client.auth(mechanism, (gs2 + first_bare).encode())
    if b"<failure" in reply:
        return reply
    server_first = base64.b64decode(reply.split(b">", 1)[1].split(b"<", 1)[0]).decode()
    fields = dict(part.split("=", 1) for part in server_first.split(","))
    salt = base64.b64decode(fields["s"])
    iterations = int(fields["i"])
    salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hash_name).digest()
    stored_key = hashlib.new(hash_name, client_key).digest()
    without_proof = f"c={base64.b64encode(gs2.encode()).decode()},r={fields['r']}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, hash_name).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    final = f"{without_proof},p={base64.b64encode(proof).decode()}"
    await client.send(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
        + base64.b64encode(final.encode()).decode()
        + "</response>"
    )
    return await client.read_until(b"</success>", b"</failure>")
