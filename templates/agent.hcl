# OpenBao Agent (or Vault Agent) for ONE certificate on ONE host.
# Install as /etc/certlocker/agent/<env>-<service>-<name>.hcl and run it with
# templates/systemd/certlocker-agent@.service, e.g. certlocker-agent@prod-api-www.
# That unit sets CERTLOCKER_CERT_PATH=certlocker/data/certs/prod/api/www, which every
# *.ctmpl reads with {{ env "CERTLOCKER_CERT_PATH" }}.
#
# Edit: vault.address, the auth mount (one per environment), and the destinations.
# Keep: the staging directory under /run (tmpfs, private to the unit, re-created
# empty at every start so a failed install is retried after a restart).

pid_file = "/run/certlocker-agent/prod-api-www/agent.pid"

vault {
  address = "https://vault.example.internal:8200"
  # ca_cert = "/etc/certlocker/vault-ca.pem"
  retry {
    num_retries = 5
  }
}

auto_auth {
  method "jwt" {
    mount_path = "auth/certlocker-prod"
    config = {
      # certlocker's service credential; refreshed by certlocker-credential.timer.
      path = "/etc/certlocker/credential.jwt"
      role = "service"
      # The default (true) deletes the file after reading: the refresher would have to
      # rewrite it before every re-login, and a restart of the agent could not log in.
      remove_jwt_after_reading = false
    }
  }
  # No sink: the token lives only in the agent's memory.
}

template_config {
  # KV v2 secrets have no lease; this is how often the agent re-reads them, so it
  # bounds how long a renewed certificate waits before it is delivered.
  static_secret_render_interval = "30s"
  # With error_on_missing_key below: exit (and let systemd restart) instead of
  # rendering "<no value>" into a server's certificate file.
  exit_on_retry_failure = true
}

# HAProxy: one file (leaf, chain, key) rendered into staging; the hook checks the key
# matches, installs it where haproxy.cfg's `crt` points, runs `haproxy -c`, reloads.
# On a fresh host HAProxy could not start without the file, so the first reload fails:
# the hook then keeps the file and runs --start.
template {
  source               = "/etc/certlocker/templates/haproxy.pem.ctmpl"
  destination          = "/run/certlocker-agent/prod-api-www/haproxy.pem"
  perms                = "0600"
  error_on_missing_key = true
  exec {
    command = [
      "/usr/local/libexec/certlocker/certlocker-deploy.sh",
      "--check", "haproxy -c -q -f /etc/haproxy/haproxy.cfg",
      "--reload", "systemctl reload haproxy",
      "--start", "systemctl start haproxy",
      "/run/certlocker-agent/prod-api-www/haproxy.pem",
      "/etc/haproxy/certs/www.pem",
    ]
    timeout = "60s"
  }
}

# nginx: one file for both ssl_certificate and ssl_certificate_key.
template {
  source               = "/etc/certlocker/templates/nginx.ctmpl"
  destination          = "/run/certlocker-agent/prod-api-www/nginx.pem"
  perms                = "0600"
  error_on_missing_key = true
  exec {
    command = [
      "/usr/local/libexec/certlocker/certlocker-deploy.sh",
      "--check", "nginx -t -q",
      "--reload", "systemctl reload nginx",
      "--start", "systemctl start nginx",
      "/run/certlocker-agent/prod-api-www/nginx.pem",
      "/etc/nginx/tls/www.pem",
    ]
    timeout = "60s"
  }
}
