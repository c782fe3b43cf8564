"""HTTP to the outside (the CA, Vault, webhooks): sessions, sending, proxy settings."""
