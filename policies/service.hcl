# The one templated policy for every service of one environment.
# Rendered per environment by `certlocker bootstrap` (@MOUNT@, @ENVIRONMENT@) and
# attached by the single role `service` of the JWT auth mount certlocker-@ENVIRONMENT@.
#
# The service name comes from the identity entity's metadata, which only certlocker
# writes (through the identity API) when it creates the entity for a credential
# generation; a JWT login cannot change it. A login whose alias has no such entity
# renders nothing and gets no access.

path "@MOUNT@/data/certs/@ENVIRONMENT@/{{identity.entity.metadata.certlocker_service}}/*" {
  capabilities = ["read"]
}
path "@MOUNT@/metadata/certs/@ENVIRONMENT@/{{identity.entity.metadata.certlocker_service}}/*" {
  capabilities = ["read", "list"]
}
