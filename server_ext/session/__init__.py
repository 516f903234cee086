"""A client's session above the wire, without I/O: SASL, throttling, enrollment and bind."""
