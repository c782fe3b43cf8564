# An administrator of certlocker: declares and changes any certificate, mints and
# revokes any service's credentials (the specs/<env>/<service>/_credentials grant),
# rotates the JWT signing key (the specs/_system/signing-keys grant), reads status and
# audit. Reads no private key: bundles go only to the service itself.

path "@MOUNT@/data/specs/*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "@MOUNT@/metadata/specs/*" {
  capabilities = ["read", "list", "delete"]
}
path "@MOUNT@/data/status/*" {
  capabilities = ["read"]
}
path "@MOUNT@/metadata/status/*" {
  capabilities = ["read", "list"]
}
path "@MOUNT@/metadata/certs/*" {
  capabilities = ["read", "list"]
}
path "@MOUNT@/data/audit/*" {
  capabilities = ["read"]
}
path "@MOUNT@/metadata/audit/*" {
  capabilities = ["read", "list"]
}
# Unmanaged certificates found by discovery (scans and adoption go through the API and
# need update on specs/_system/discovery, which specs/* above grants).
path "@MOUNT@/data/discovered/*" {
  capabilities = ["read"]
}
path "@MOUNT@/metadata/discovered/*" {
  capabilities = ["read", "list"]
}

# Issuer secrets (dns-01 provider credentials, ACME EAB): set or replace, never read back.
path "@MOUNT@/data/system/dns/*" {
  capabilities = ["create", "update"]
}
path "@MOUNT@/data/system/acme/eab/*" {
  capabilities = ["create", "update"]
}

# Name grants: the names each service may carry (docs/vault-by-hand.md, "Name grants").
path "@MOUNT@/data/grants/*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "@MOUNT@/metadata/grants/*" {
  capabilities = ["read", "list", "delete"]
}
