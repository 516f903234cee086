"""The protocol core: plain Python with no I/O (only the stdlib and cryptography)."""
