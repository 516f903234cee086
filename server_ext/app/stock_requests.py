"""What the stock servers' hook requests carry, read at the boundary: the shared secret in an
``Authorization`` header (Prosody's module: Bearer; MongooseIM's http auth: Basic) and the
account MongooseIM names with ``user`` and ``server``."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from pairing.errors import InvalidJID
from pairing.protocol.https_api import APICondition, APIRefused
from pairing.protocol.jid import JID

BEARER = "bearer "
#: MongooseIM's basic_auth user name is the operator's choice; the password is the secret.
BASIC = "basic "


def credential(header: str, scheme: str) -> str | None:
    """The secret in ``Authorization: Bearer S`` or ``Basic base64(user:S)`` (RFC 6750, 7617)."""
    if header[: len(scheme)].lower() != scheme:
        return None
    value = header[len(scheme) :].strip()
    if scheme == BEARER:
        return value
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    _user, sep, password = decoded.partition(":")
    return password if sep else None


def mongooseim_account(query: Mapping[str, str], domain: str) -> JID:
    """The account of ``?user=&server=``, prepared (RFC 7622), on this service's domain."""
    user, server = query.get("user", ""), query.get("server", "")
    try:
        account = JID(user, server)  # RFC 7622: prepared on construction
    except InvalidJID as exc:
        raise APIRefused(APICondition.MALFORMED, f"user and server: {exc}") from None
    if not account.local:
        raise APIRefused(APICondition.MALFORMED, "the user is empty")
    if account.domain != domain:
        raise APIRefused(APICondition.NOT_FOUND, f"this service serves {domain}")
    return account


__all__ = ["BASIC", "BEARER", "credential", "mongooseim_account"]
