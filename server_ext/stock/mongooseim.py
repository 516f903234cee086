"""MongooseIM as the server devices log in to: it pulls, so there is nothing to push.

MongooseIM's ``http`` auth method asks ``GET …/get_certs?user=&server=`` at each SASL
EXTERNAL attempt and accepts the presented certificate only if its DER equals one of those
returned (its ``doc/authentication-methods/http.md``); the HTTPS face answers from the
registry, so a revoked certificate is refused at the next login. This adapter cannot end a
live session: MongooseIM's admin API is not part of that contract and is not installable
here to test, so :meth:`close_sessions` says so instead of pretending.
"""

from __future__ import annotations

from collections.abc import Sequence

from pairing.protocol.jid import JID
from server_ext.config import StockKind
from server_ext.stock.base import StockContext, StockServer, Unsupported
from server_ext.stock.options import ComponentSettings, Options

_NO_CLOSE = (
    "MongooseIM cannot be told to close a session by server-ext: the device's certificate is "
    "refused from its next login on; end its live session with MongooseIM's own admin tools "
    "(e.g. `mongooseimctl kick_session`)"
)


class MongooseIMServer(StockServer):
    """The :class:`~server_ext.stock.base.StockServer` for MongooseIM (pull-based)."""

    kind = StockKind.MONGOOSEIM

    def __init__(self, context: StockContext, component: ComponentSettings) -> None:
        self.context = context
        self.component = component

    async def start(self) -> None:
        """Nothing to start: MongooseIM calls the HTTPS face."""

    async def stop(self) -> None:
        """Nothing to stop."""

    async def sync_trust(self) -> None:
        """Nothing to push: ``get_certs`` reads the registry at every login."""

    async def close_sessions(self, jids: Sequence[JID], reason: str) -> int:
        raise Unsupported(_NO_CLOSE)

    async def online(self) -> dict[JID, str | None]:
        raise Unsupported("server-ext cannot list MongooseIM's sessions")


def create(context: StockContext) -> MongooseIMServer:
    """The MongooseIM kind (``[stock.mongooseim]`` holds only the component settings)."""
    options = Options(StockKind.MONGOOSEIM.value, context.options)
    component = ComponentSettings.read(options, context.config.domain, default_port=0)
    options.finish()
    return MongooseIMServer(context, component)
