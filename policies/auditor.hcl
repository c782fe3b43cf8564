# An auditor reads specs, status and the audit trail, and sees no key material and
# has no way to change anything.

path "@MOUNT@/data/status/*" {
  capabilities = ["read"]
}
path "@MOUNT@/metadata/status/*" {
  capabilities = ["read", "list"]
}
path "@MOUNT@/data/specs/*" {
  capabilities = ["read"]
}
path "@MOUNT@/metadata/specs/*" {
  capabilities = ["read", "list"]
}
path "@MOUNT@/data/discovered/*" {
  capabilities = ["read"]
}
path "@MOUNT@/metadata/discovered/*" {
  capabilities = ["read", "list"]
}
path "@MOUNT@/data/audit/*" {
  capabilities = ["read"]
}
path "@MOUNT@/metadata/audit/*" {
  capabilities = ["read", "list"]
}
path "@MOUNT@/data/grants/*" {
  capabilities = ["read"]
}
path "@MOUNT@/metadata/grants/*" {
  capabilities = ["read", "list"]
}
