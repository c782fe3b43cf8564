# certlocker's own token: least privilege.
# Rendered by `certlocker bootstrap` (@MOUNT@ = the KV v2 mount, default "certlocker").
#
# It may WRITE certificates into every service's path but never READ them back: no
# single system holds every private key. Only the keys of issuances in flight
# (system/inflight/...) are readable, and they are deleted once stored.
#
# The token is created without Vault's "default" policy (`-no-default-policy`): of it
# certlocker needs only its own token's lookup and renewal, granted here. Leaving the
# default policy out also makes every request cheaper: OpenBao builds the token's ACL per
# request, and the default policy roughly doubles that cost (docs/performance.md).
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}

# Specs are desired state written by operators; certlocker reads them (and the
# administrator's documents under specs/_system/).
path "@MOUNT@/data/specs/+/+/*" {
  capabilities = ["read"]
}
path "@MOUNT@/data/specs/_system/*" {
  capabilities = ["read"]
}
# Except the specs of certificates ordered through certlocker's ACME server (acme-*):
# certlocker writes those itself, with the client's CSR and order (names still checked
# against the service's grant before every order). Longer than the rule above, so it
# takes precedence for these paths.
path "@MOUNT@/data/specs/+/+/acme-*" {
  capabilities = ["create", "read", "update"]
}
path "@MOUNT@/metadata/specs/*" {
  capabilities = ["read", "list"]
}
# The spec watch: every spec's version and write time in one request (OpenBao 2.2+),
# so a spec written with the Vault CLI is acted on within a minute. Without it the
# watch falls back to listing, which finds new specs only, every 5 minutes.
path "@MOUNT@/detailed-metadata/specs/*" {
  capabilities = ["scan"]
}

# Name grants: which names each service may carry (written by administrators).
path "@MOUNT@/data/grants/*" {
  capabilities = ["read"]
}
path "@MOUNT@/metadata/grants/*" {
  capabilities = ["read", "list"]
}

# Status is what certlocker observed.
path "@MOUNT@/data/status/*" {
  capabilities = ["create", "read", "update"]
}
path "@MOUNT@/metadata/status/*" {
  capabilities = ["read", "list", "delete"]
}

# Certificates: write-only. Metadata (versions, no data) is readable for check-and-set.
path "@MOUNT@/data/certs/*" {
  capabilities = ["create", "update"]
}
path "@MOUNT@/metadata/certs/*" {
  capabilities = ["read", "list", "delete"]
}
path "@MOUNT@/destroy/certs/*" {
  capabilities = ["update"]
}

# certlocker's own state: ACME accounts, signing keys, leases, in-flight issuances,
# http-01 answers, credential generations.
path "@MOUNT@/data/system/*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "@MOUNT@/metadata/system/*" {
  capabilities = ["read", "list", "delete"]
}

# Unmanaged certificates found by discovery scans (public facts only).
path "@MOUNT@/data/discovered/*" {
  capabilities = ["create", "read", "update"]
}
path "@MOUNT@/metadata/discovered/*" {
  capabilities = ["read", "list", "delete"]
}

# Audit events are append-only: create, never update or delete.
path "@MOUNT@/data/audit/*" {
  capabilities = ["create", "read"]
}
path "@MOUNT@/metadata/audit/*" {
  capabilities = ["read", "list"]
}

# Service identities: one entity per service credential generation, so revoking a
# generation disables exactly its entity (see docs/decisions/0001-service-identity.md).
path "identity/entity" {
  capabilities = ["create", "update"]
}
path "identity/entity/id/*" {
  capabilities = ["read", "update"]
}
path "identity/entity/name/*" {
  capabilities = ["create", "read", "update"]
}
path "identity/entity-alias" {
  capabilities = ["create", "update"]
}
path "identity/entity-alias/id/*" {
  capabilities = ["read", "update"]
}

# To find the JWT auth mounts' accessors.
path "sys/auth" {
  capabilities = ["read"]
}

# Internal CAs: for every `vault-pki` issuer in the settings, bootstrap renders
#   path "<pki_mount>/sign/<pki_role>" { capabilities = ["update"] }
# here (nothing when there is none). certlocker sends only a CSR; the key stays with it.
@PKI_SIGN@
