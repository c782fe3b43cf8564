"""The operator's command line: a client of the HTTP API, plus the commands that run
next to Vault (bootstrap) or as their own process (reconcile).

Exit codes scripts can rely on: 0 success, 1 the API answered with an error (the problem
document is printed), 2 usage error, 3 cannot reach the API or Vault.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
import requests

EXIT_API_ERROR = 1
EXIT_UNREACHABLE = 3
REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"


class Api:
    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", {})
        if self.token:
            headers.setdefault("X-Vault-Token", self.token)
        try:
            resp = requests.request(method, self.url + path, headers=headers, timeout=180,
                                    **kwargs)
        except requests.RequestException as exc:
            click.echo(f"error: cannot reach certlocker at {self.url}: {type(exc).__name__}",
                       err=True)
            sys.exit(EXIT_UNREACHABLE)
        try:
            body = resp.json()
        except ValueError:
            body = {"detail": resp.text[:500]}
        if resp.status_code >= 400:
            click.echo(f"error: {resp.status_code} {body.get('title', '')}: "
                       f"{body.get('detail', '')}", err=True)
            sys.exit(EXIT_API_ERROR)
        return body


@click.group()
@click.option("--url", envvar="CERTLOCKER_URL", default="http://127.0.0.1:8180",
              show_default=True, help="certlocker API URL ($CERTLOCKER_URL)")
@click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
@click.pass_context
def main(ctx: click.Context, url: str, as_json: bool) -> None:
    """certlocker: certificate lifecycle beside Vault / OpenBao."""
    ctx.obj = {"api": Api(url, os.environ.get("VAULT_TOKEN")), "json": as_json}


def _out(ctx: click.Context, body: Any, human: str) -> None:
    click.echo(json.dumps(body, indent=2) if ctx.obj["json"] else human)


def _describe(cert: dict[str, Any]) -> str:
    cur = cert.get("current") or {}
    lines = [f"id:          {cert['id']}",
             f"names:       {', '.join(cert['dns_names'])}",
             f"status:      {cert['status']}",
             f"issuer:      {cert['issuer']} ({cert['key_type']})"]
    if cur:
        lines += [f"serial:      {cur['serial']}",
                  f"expires:     {cur['not_after']}",
                  f"sha256:      {cur['sha256_fingerprint']}"]
    if cert.get("last_error"):
        lines.append(f"last error:  {cert['last_error']}")
    lines.append(f"vault path:  {cert['vault']['path']}")
    return "\n".join(lines)


@main.command()
@click.argument("environment")
@click.argument("service")
@click.argument("name")
@click.option("--dns", "dns_names", multiple=True, required=True, help="a DNS name (repeat)")
@click.option("--issuer", default=None)
@click.option("--key-type", default=None)
@click.option("--wait", default=60.0, show_default=True, help="seconds to wait for issuance")
@click.pass_context
def request(ctx: click.Context, environment: str, service: str, name: str,
            dns_names: tuple[str, ...], issuer: str | None, key_type: str | None,
            wait: float) -> None:
    """Declare a certificate and issue it."""
    body: dict[str, Any] = {"environment": environment, "service": service, "name": name,
                            "dns_names": list(dns_names)}
    if issuer:
        body["issuer"] = issuer
    if key_type:
        body["key_type"] = key_type
    cert = ctx.obj["api"].call("POST", f"/v1/certificates?wait={wait:g}", json=body)
    _out(ctx, cert, _describe(cert))
    if cert["status"] == "failed":
        sys.exit(EXIT_API_ERROR)


@main.command("list")
@click.option("--environment", default=None)
@click.option("--service", default=None)
@click.pass_context
def list_(ctx: click.Context, environment: str | None, service: str | None) -> None:
    """List the inventory."""
    params = {k: v for k, v in {"environment": environment, "service": service}.items() if v}
    body = ctx.obj["api"].call("GET", "/v1/certificates", params=params)
    rows = [f"{'ID':40} {'STATUS':9} {'EXPIRES':22} NAMES"]
    for c in body["items"]:
        rows.append(f"{c['id']:40} {c['status']:9} "
                    f"{(c.get('current') or {}).get('not_after', '-'):22} "
                    f"{','.join(c['dns_names'])}")
    _out(ctx, body, "\n".join(rows))


@main.command()
@click.argument("cert_id")
@click.pass_context
def show(ctx: click.Context, cert_id: str) -> None:
    """Show one certificate."""
    cert = ctx.obj["api"].call("GET", f"/v1/certificates/{cert_id}")
    _out(ctx, cert, _describe(cert))


@main.command()
@click.argument("cert_id")
@click.option("--wait", default=60.0, show_default=True)
@click.pass_context
def renew(ctx: click.Context, cert_id: str, wait: float) -> None:
    """Issue a new certificate now."""
    cert = ctx.obj["api"].call("POST", f"/v1/certificates/{cert_id}/renew?wait={wait:g}")
    _out(ctx, cert, _describe(cert))


@main.group()
def credentials() -> None:
    """Service credentials (JWTs for Vault's JWT auth)."""


@credentials.command("mint")
@click.argument("environment")
@click.argument("service")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="write the token to this file (0600) instead of stdout")
@click.pass_context
def credentials_mint(ctx: click.Context, environment: str, service: str,
                     out: str | None) -> None:
    """Mint a credential for SERVICE in ENVIRONMENT."""
    body = ctx.obj["api"].call("POST", f"/v1/services/{environment}/{service}/credentials")
    if out:
        _write_secret_file(Path(out), body["token"])
        shown = dict(body, token=f"(written to {out})")
        _out(ctx, shown, f"credential written to {out}, expires {body['expires_at']}\n"
             f"login: bao write auth/{body['vault']['auth_path']}/login "
             f"role={body['vault']['role']} jwt=@{out}")
    else:
        _out(ctx, body, body["token"])


@credentials.command("revoke")
@click.argument("environment")
@click.argument("service")
@click.pass_context
def credentials_revoke(ctx: click.Context, environment: str, service: str) -> None:
    """Revoke every credential of SERVICE at once."""
    body = ctx.obj["api"].call("DELETE", f"/v1/services/{environment}/{service}/credentials")
    _out(ctx, body, f"revoked; {environment}/{service} is now at generation "
                    f"{body['generation']}")


def _write_secret_file(path: Path, content: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(content)
    os.replace(tmp, path)


# -- next to Vault ---------------------------------------------------------------------

@main.command()
@click.argument("phase", type=click.Choice(["all", "vault", "auth"]), default="all")
@click.option("--policies", "policies_dir", type=click.Path(file_okay=False),
              default=str(REPO_POLICIES), show_default=True)
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="keep a valid certlocker service token in this file (0600)")
@click.option("--operator-token-file", type=click.Path(dir_okay=False), default=None,
              help="keep a valid admin operator token in this file (0600)")
def bootstrap(phase: str, policies_dir: str, token_file: str | None,
              operator_token_file: str | None) -> None:
    """Configure Vault for certlocker, idempotently (VAULT_ADDR, VAULT_TOKEN of an admin).

    Phase 'vault' needs only Vault; phase 'auth' makes Vault's JWT auth trust the
    API's JWKS, so the API must answer at public_url first.
    """
    from . import settings as settings_mod
    from .errors import CertlockerError
    from .vault.bootstrap import Bootstrapper
    from .vault.client import make_client

    admin_token = os.environ.get("VAULT_TOKEN")
    if not admin_token:
        raise click.UsageError("set VAULT_TOKEN to an administrator's token")
    env = dict(os.environ)
    env.setdefault("CERTLOCKER_VAULT_TOKEN", admin_token)  # settings need one; unused here
    try:
        settings = settings_mod.load(environ=env)
        client = make_client(settings.vault_addr, admin_token, settings.vault_ca_cert)
        boot = Bootstrapper(client, settings, Path(policies_dir))
        if phase in ("all", "vault"):
            boot.kv_mount()
            boot.auth_mounts()
            boot.policies()
            if token_file:
                boot.token(Path(token_file), "certlocker", "certlocker")
            if operator_token_file:
                boot.token(Path(operator_token_file), "certlocker-operator-admin",
                           "certlocker-operator")
        if phase in ("all", "auth"):
            boot.jwt_trust()
    except CertlockerError as exc:
        click.echo(f"error: {exc.detail}", err=True)
        sys.exit(EXIT_UNREACHABLE if exc.status == 503 else EXIT_API_ERROR)
    for item in boot.report.changed:
        click.echo(f"changed    {item}")
    for item in boot.report.unchanged:
        click.echo(f"unchanged  {item}")
