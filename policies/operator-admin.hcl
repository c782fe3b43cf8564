# An administrator of certlocker: declares and changes any certificate, mints and
# revokes any service's credentials (the specs/<env>/<service>/_credentials grant),
# reads status and audit. Reads no private key: bundles go only to the service itself.

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
