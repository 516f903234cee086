"""Settings for every test run."""

from __future__ import annotations

import os

# A new data directory serves the web page on 5443 (the README's one command prints its URL).
# Tests run many servers at once, on this machine shared with other runs: the `server-ext`
# processes they start keep the HTTPS face off unless a test asks for it (port 0 or a free
# port of its own).
os.environ.setdefault("SERVER_EXT_HTTPS_PORT", "0")
