"""The wire: XML parsing and writing, the RFC 6120 stream state machine, TLS over memory."""
