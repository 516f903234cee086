"""Outward faces over asyncio: the c2s listeners and the server's TLS identity."""
