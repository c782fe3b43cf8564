"""The main job, end to end, against the running dev stack (see vault-dev/demo).

1. an operator declares a certificate for service `api` in `prod` over HTTP;
2. certlocker obtains it from Pebble over ACME (http-01 answered by certlocker itself)
   and stores key, leaf, chain and fullchain at the service's Vault path;
3. certlocker mints the service a JWT;
4. with that JWT alone, the stock `bao` CLI logs in and reads the service's own
   certificate, and is denied another service's.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
BAO = str(Path(sys.executable).with_name("bao"))


def load_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return env


def declare(api: str, token: str, service: str, names: list[str]) -> dict:
    headers = {"X-Vault-Token": token}
    body = {"environment": "prod", "service": service, "name": "www", "dns_names": names}
    resp = requests.post(f"{api}/v1/certificates?wait=60", json=body, headers=headers,
                         timeout=90)
    if resp.status_code == 409:  # declared by an earlier run: renew it instead
        resp = requests.post(f"{api}/v1/certificates/prod.{service}.www/renew?wait=60",
                             headers=headers, timeout=90)
    if resp.status_code >= 400:
        sys.exit(f"certlocker refused: {resp.status_code} {resp.text}")
    cert = resp.json()
    if cert["status"] != "valid":
        sys.exit(f"certificate not issued: {cert['status']} {cert.get('last_error')}")
    return cert


def bao(args: list[str], env: dict[str, str], stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BAO, *args], env=env, input=stdin, capture_output=True, text=True,
                          timeout=30)


def main() -> int:
    env = load_env(HERE / ".env")
    api, operator = env["CERTLOCKER_URL"], env["VAULT_TOKEN"]

    cert = declare(api, operator, "api", ["www.api.test", "api.test"])
    declare(api, operator, "web", ["www.web.test"])

    resp = requests.post(f"{api}/v1/services/prod/api/credentials",
                         headers={"X-Vault-Token": operator}, timeout=30)
    resp.raise_for_status()
    credential = resp.json()
    auth_path, role = credential["vault"]["auth_path"], credential["vault"]["role"]

    bao_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(HERE / ".state"),
               "VAULT_ADDR": env["VAULT_ADDR"]}
    login = bao(["write", "-field=token", f"auth/{auth_path}/login", f"role={role}",
                 "jwt=-"], bao_env, stdin=credential["token"])
    if login.returncode != 0:
        sys.exit(f"login with the service JWT failed: {login.stderr}")
    service_env = dict(bao_env, VAULT_TOKEN=login.stdout.strip())
    own = bao(["kv", "get", "-mount=certlocker", "-field=serial", "certs/prod/api/www"],
              service_env)
    other = bao(["kv", "get", "-mount=certlocker", "certs/prod/web/www"], service_env)

    current = cert["current"]
    ok_own = own.returncode == 0 and own.stdout.strip() == current["serial"]
    ok_other = other.returncode != 0 and "permission denied" in other.stderr
    print(f"""
certlocker demo: certificate issued, stored and scoped
  certificate   {cert['id']}
  names         {', '.join(cert['dns_names'])}
  serial        {current['serial']}
  not after     {current['not_after']}
  sha256        {current['sha256_fingerprint']}
  issuer        {current['issuer']}
  vault path    {cert['vault']['path']}

service credential (JWT for auth/{auth_path}, role {role}), expires {credential['expires_at']}
  $ bao write auth/{auth_path}/login role={role} jwt=<the JWT>
  $ bao kv get -mount=certlocker -field=serial certs/prod/api/www
    {'OK   read its own certificate, serial ' + own.stdout.strip() if ok_own
     else 'FAIL ' + own.stderr.strip()}
  $ bao kv get -mount=certlocker certs/prod/web/www
    {'OK   denied another service: permission denied' if ok_other
     else 'FAIL the service could read another service: ' + other.stdout[:80]}

ACME server for stock clients (EAB from `certlocker acme-account prod <service>`):
  {api}/acme/prod/directory

Load the stack's environment with `. vault-dev/.env`; stop it with `vault-dev/down`.""")
    return 0 if ok_own and ok_other else 1


if __name__ == "__main__":
    sys.exit(main())
