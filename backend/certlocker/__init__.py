"""certlocker: TLS certificate lifecycle beside HashiCorp Vault / OpenBao."""

__version__ = "0.1.0"
