"""What the server answers once a session is bound: routing, the server's own IQs, XEP-0257,
XEP-0050 commands, and token redemption before SASL."""
