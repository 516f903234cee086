"""Advertise one mDNS service on 127.0.0.1 until killed (a stranger or a control in LAN tests).

``python -m tests.support.mdns_probe NAME`` prints ``ready`` once the announcement is out.
It uses its own service type, so runs on the host that do not isolate themselves ignore it.
"""

from __future__ import annotations

import asyncio
import sys

from pairing.lan.discovery import advertise

PROBE_SERVICE_TYPE = "_xmpp-dp-probe._tcp.local."


async def main(name: str) -> None:
    async with advertise(
        9, name, addresses=["127.0.0.1"], interfaces=["127.0.0.1"], service_type=PROBE_SERVICE_TYPE
    ):
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
