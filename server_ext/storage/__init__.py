"""The registry: the only package that touches SQLite."""
