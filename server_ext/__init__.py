"""The server side: the certificate registry, the policies and the embedded XMPP server."""

from server_ext.errors import ServerExtError

__all__ = ["ServerExtError"]
