# Example team operator: the payments team manages services named payments-* in every
# environment, and nothing else. Copy and rename per team; `+` matches one path segment.

path "@MOUNT@/data/specs/+/payments-*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "@MOUNT@/metadata/specs/+/payments-*" {
  capabilities = ["read", "list", "delete"]
}
path "@MOUNT@/data/status/+/payments-*" {
  capabilities = ["read"]
}
path "@MOUNT@/metadata/status/+/payments-*" {
  capabilities = ["read", "list"]
}

# The names granted to the team's services: readable, never writable by the team (an
# administrator grants names; default deny).
path "@MOUNT@/data/grants/+/payments-*" {
  capabilities = ["read"]
}
