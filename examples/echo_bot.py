"""A passwordless echo bot: enroll it once with a QR code, then it logs in with its certificate.

    device-agent --state-dir ./echo-bot enroll --qr-image qr.png
    python examples/echo_bot.py ./echo-bot

The only lines that differ from any slixmpp bot are the two marked below.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import device_agent


async def main(state_dir: Path) -> None:
    bot = await device_agent.connect(state_dir)  # <- instead of ClientXMPP(jid, password)
    bot.send_presence()

    def echo(message: Any) -> None:
        if message["type"] in ("chat", "normal") and message["body"]:
            message.reply(f"echo: {message['body']}").send()

    bot.add_event_handler("message", echo)
    print(f"online as {bot.boundjid}; Ctrl-C to stop")
    await bot.disconnected  # <- runs until the connection ends (or the device is revoked)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "./echo-bot")))
