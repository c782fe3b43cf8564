"""The lifecycle's records in Vault: the due and expiry indexes (and the day folders
under them), the in-flight journals, the one status check-and-set, issuer secrets, the
Vault-backed leases, accounts and challenges, and the reconcilers' heartbeats."""
