"""LAN pairing adapters: mDNS discovery and the TCP transport around the pair-setup core."""
