"""The operator's command line: a client of the HTTP API, plus the commands that run
next to Vault (bootstrap) or as their own process (reconcile).

Exit codes scripts can rely on: 0 success, 1 the API answered with an error (the problem
document is printed) or the certificate ended failed, refused or invalid, 2 usage error
(also: a destructive command without --yes and no terminal to ask on), 3 cannot reach
the API or Vault, 4 still not settled when --wait ran out.

Every command takes --json (before or after its name) for output scripts can read.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import click
import requests

EXIT_API_ERROR = 1
EXIT_UNREACHABLE = 3
EXIT_TIMEOUT = 4
# Where a wait ends: valid succeeds, the others fail (exit 1).
SETTLED_OK = ("valid",)
SETTLED_BAD = ("failed", "refused", "invalid", "revoked", "retired")
REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"


class Api:
    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        #: the HTTP status of the last answer (202: accepted, not settled yet)
        self.last_status = 0

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
        self.last_status = resp.status_code
        if resp.status_code >= 400:
            click.echo(f"error: {resp.status_code} {body.get('title', '')}: "
                       f"{body.get('detail', '')}", err=True)
            sys.exit(EXIT_API_ERROR)
        return body


@click.group()
@click.option("--url", envvar="CERTLOCKER_URL", default="http://127.0.0.1:8180",
              show_default=True, help="certlocker API URL ($CERTLOCKER_URL)")
@click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
@click.option("--progress/--no-progress", default=None,
              help="show progress on stderr while waiting [default: when stderr is a "
                   "terminal]")
@click.pass_context
def main(ctx: click.Context, url: str, as_json: bool, progress: bool | None) -> None:
    """certlocker: certificate lifecycle beside Vault / OpenBao."""
    ctx.obj = {"api": Api(url, os.environ.get("VAULT_TOKEN")), "json": as_json,
               "progress": progress}


def _out(ctx: click.Context, body: Any, human: str) -> None:
    click.echo(json.dumps(body, indent=2) if ctx.obj["json"] else human)


def _json_flag(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """``--json`` after a command's name: the same as before it."""
    if value and ctx.obj is not None:
        ctx.obj["json"] = True


def _progress_flag(ctx: click.Context, param: click.Parameter, value: bool | None) -> None:
    if value is not None and ctx.obj is not None:
        ctx.obj["progress"] = value


def _accept_json_everywhere(group: click.Group) -> None:
    """Give every command ``--json`` and ``--progress``, so ``certlocker list --json``
    works as ``certlocker --json list`` does."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            _accept_json_everywhere(command)
            continue
        if not any(p.name == "json_flag" for p in command.params):
            command.params.append(click.Option(
                ["--json", "json_flag"], is_flag=True, expose_value=False,
                is_eager=True, callback=_json_flag, help="print JSON for scripts"))
            command.params.append(click.Option(
                ["--progress/--no-progress", "progress_flag"], default=None,
                expose_value=False, is_eager=True, callback=_progress_flag,
                help="show progress on stderr while waiting [default: when stderr is a "
                     "terminal]"))


def _show_progress(ctx: click.Context) -> bool:
    chosen = ctx.obj.get("progress")
    if chosen is not None:
        return bool(chosen)
    return not ctx.obj["json"] and sys.stderr.isatty()


@contextlib.contextmanager
def _progress(ctx: click.Context, what: str) -> Iterator[None]:
    """A spinner with the seconds waited, on stderr, while the block runs (when stderr
    is a terminal, or with --progress); stdout stays clean for tables and JSON."""
    if not _show_progress(ctx):
        yield
        return
    done = threading.Event()
    started = time.monotonic()

    def spin() -> None:
        for frame in itertools.cycle("|/-\\"):
            click.echo(f"\r{frame} {what} ({time.monotonic() - started:.0f}s)", nl=False,
                       err=True)
            if done.wait(0.25):
                break
        click.echo(f"\r{what}: done after {time.monotonic() - started:.0f}s", err=True)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        yield
    finally:
        done.set()
        spinner.join(2)


def _confirm(ctx: click.Context, yes: bool, question: str) -> None:
    """A destructive command goes ahead with --yes, or when a person at a terminal says
    so; without a terminal to ask on it refuses (exit 2) rather than guess."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.UsageError(f"{question} Pass --yes to confirm (no terminal to ask on).")
    if not click.confirm(question, default=False, err=True):
        click.echo("not confirmed: nothing done", err=True)
        sys.exit(EXIT_API_ERROR)


def _settle(ctx: click.Context, cert: dict[str, Any], wait: float) -> None:
    """Exit non-zero when the certificate ended badly (1) or the wait ran out before it
    settled (4: the API answered 202)."""
    status = cert.get("status")
    if status in SETTLED_BAD:
        sys.exit(EXIT_API_ERROR)
    if wait and ctx.obj["api"].last_status == 202:
        click.echo(f"timed out: {cert.get('id')} is still {status} after {wait:g}s; "
                   f"follow it with: certlocker wait {cert.get('id')}", err=True)
        sys.exit(EXIT_TIMEOUT)


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
    if cert.get("renewal_failing"):
        left = cert.get("remaining_validity_seconds")
        lines.append(f"renewal:     failing, next attempt {cert.get('next_attempt_at') or '-'}"
                     + (f", {left // 3600} h of validity left" if left is not None else ""))
    if cert.get("failed_acme_order"):
        lines.append(f"acme order:  {cert['failed_acme_order']} failed (invalid); the "
                     "client's next order is issued")
    planned = cert.get("next_renewal") or {}
    if planned:
        lines.append(f"next renewal: {planned.get('at') or 'never'} "
                     f"({planned.get('reason')}: {planned.get('why')})")
    lines.append(f"vault path:  {cert['vault']['path']}")
    targets = [t["address"] for t in cert.get("targets") or []]
    lines.append(f"targets:     {', '.join(targets) or '-'}")
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
    with _progress(ctx, f"issuing {environment}.{service}.{name}"):
        cert = ctx.obj["api"].call("POST", f"/v1/certificates?wait={wait:g}", json=body)
    _out(ctx, cert, _describe(cert))
    _settle(ctx, cert, wait)


@main.command("list")
@click.option("--environment", default=None)
@click.option("--service", default=None)
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="show at most this many (default: all, page after page)")
@click.option("--page-size", type=click.IntRange(1, 1000), default=1000, show_default=True,
              help="certificates per API request")
@click.pass_context
def list_(ctx: click.Context, environment: str | None, service: str | None,
          limit: int | None, page_size: int) -> None:
    """List the inventory: every certificate, following the API's pages to the end."""
    params: dict[str, Any] = {k: v for k, v in {"environment": environment,
                                                "service": service}.items() if v}
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        want = page_size if limit is None else min(page_size, limit - len(items))
        page = ctx.obj["api"].call("GET", "/v1/certificates", params={
            **params, "limit": want, **({"cursor": cursor} if cursor else {})})
        items += page["items"]
        cursor = page.get("next_cursor")
        if not cursor or (limit is not None and len(items) >= limit):
            break
    body = {"items": items, "next_cursor": cursor, "scope": page.get("scope", "all")}
    if body["scope"] == "permitted":
        click.echo("note: your Vault token cannot list the whole inventory; showing the "
                   "certificates of the service folders it may list", err=True)
    if cursor:
        click.echo(f"note: showing the first {len(items)}; there are more (drop --limit "
                   "for all)", err=True)
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
    with _progress(ctx, f"renewing {cert_id}"):
        cert = ctx.obj["api"].call("POST", f"/v1/certificates/{cert_id}/renew?wait={wait:g}")
    _out(ctx, cert, _describe(cert))
    _settle(ctx, cert, wait)


@main.command()
@click.argument("cert_id")
@click.option("--reason", required=True,
              help="RFC 5280 reason: unspecified, keyCompromise, cACompromise, "
                   "affiliationChanged, superseded, cessationOfOperation, "
                   "privilegeWithdrawn, aACompromise")
@click.option("--replace/--no-replace", default=None,
              help="issue a replacement (default: yes for keyCompromise) or remove the "
                   "material from the service's path")
@click.option("--wait", default=60.0, show_default=True,
              help="seconds to wait for replacement and target checks")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@click.pass_context
def revoke(ctx: click.Context, cert_id: str, reason: str, replace: bool | None,
           wait: float, yes: bool) -> None:
    """Revoke the current certificate at the CA, then replace or remove it."""
    _confirm(ctx, yes, f"Revoke the current certificate of {cert_id} at the CA "
                       f"({reason})? This cannot be undone.")
    body: dict[str, Any] = {"reason": reason}
    if replace is not None:
        body["replace"] = replace
    with _progress(ctx, f"revoking {cert_id}"):
        cert = ctx.obj["api"].call("POST",
                                   f"/v1/certificates/{cert_id}/revoke?wait={wait:g}",
                                   json=body)
    rev = cert.get("revocation") or {}
    _out(ctx, cert, f"revoked:     {rev.get('serial')} ({rev.get('reason')})\n"
                    f"follow-up:   {rev.get('phase')}\nstatus:      {cert.get('status')}")


@main.command()
@click.argument("cert_id")
@click.option("--no-revoke", is_flag=True,
              help="leave the certificate valid at the CA (it is revoked by default)")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@click.pass_context
def retire(ctx: click.Context, cert_id: str, no_revoke: bool, yes: bool) -> None:
    """Stop managing a certificate: revoke it at the CA, destroy its key material in
    Vault, revoke the service's credentials with its last certificate. Asks first
    (or pass --yes)."""
    _confirm(ctx, yes, f"Retire {cert_id}: "
             + ("" if no_revoke else "revoke it at the CA, ")
             + "destroy every stored version of its key and certificate, and revoke "
               "the service's credentials if this is its last certificate?")
    body = ctx.obj["api"].call("DELETE", f"/v1/certificates/{cert_id}",
                               params={"revoke": "false" if no_revoke else "true"})
    last = body.get("last") or {}
    steps = (body.get("retirement") or {}).get("steps") or {}
    _out(ctx, body, f"retired:     {body['id']} at {body.get('retired_at')}\n"
                    f"last serial: {last.get('serial')}\n"
                    f"phase:       {(body.get('retirement') or {}).get('phase')}\n"
                    f"revocation:  {steps.get('revocation')}\n"
                    f"credentials: {steps.get('credentials')}")


@main.command()
@click.pass_context
def cleanup(ctx: click.Context) -> None:
    """List leftovers: expired material still stored, status without a spec."""
    body = ctx.obj["api"].call("GET", "/v1/certificates/cleanup")
    lines = [f"{i['id']:40} {i['kind']:22} {i['state']:9} {i.get('not_after') or ''}"
             for i in body["items"]]
    _out(ctx, body, "\n".join(lines) or "nothing to clean up")


@main.command()
@click.argument("cert_id")
@click.pass_context
def verify(ctx: click.Context, cert_id: str) -> None:
    """Check now that every target node serves the current certificate.

    Exits 0 when every node is ok, 1 when any is not, when the certificate has no
    targets (nothing was checked), or on an API error."""
    with _progress(ctx, f"verifying {cert_id}"):
        cert = ctx.obj["api"].call("POST", f"/v1/certificates/{cert_id}/verify")
    if not cert["targets"]:
        _out(ctx, cert, _describe(cert))
        click.echo(f"error: {cert_id} has no targets, so nothing was verified; set them "
                   f"with: certlocker targets set {cert_id} HOST:PORT", err=True)
        sys.exit(EXIT_API_ERROR)
    rows = [f"{'TARGET':32} {'NODE':24} {'STATUS':17} {'SERVED SHA-256':16} REASON"]
    for target in cert["targets"]:
        for node in target.get("nodes") or [target]:
            rows.append(f"{target['address']:32} {node['address']:24} {node['status']:17} "
                        f"{(node.get('served_sha256') or '-')[:16]:16} "
                        f"{node.get('detail') or ''}".rstrip())
    _out(ctx, cert, _describe(cert) + "\n\n" + "\n".join(rows))
    if any(t["status"] != "ok" for t in cert["targets"]):
        sys.exit(EXIT_API_ERROR)


@main.command("wait")
@click.argument("cert_id")
@click.option("--timeout", type=click.FloatRange(min=0), default=300.0, show_default=True,
              help="seconds to wait at most")
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="seconds between checks")
@click.pass_context
def wait_(ctx: click.Context, cert_id: str, timeout: float, interval: float) -> None:
    """Wait until CERT_ID settles: valid (exit 0), or failed, refused, invalid, revoked
    or retired (exit 1); still pending or issuing after --timeout: exit 4."""
    api = ctx.obj["api"]
    deadline = time.monotonic() + timeout
    with _progress(ctx, f"waiting for {cert_id}"):
        while True:
            cert = api.call("GET", f"/v1/certificates/{cert_id}")
            if cert["status"] in SETTLED_OK + SETTLED_BAD or time.monotonic() >= deadline:
                break
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
    _out(ctx, cert, _describe(cert))
    if cert["status"] in SETTLED_BAD:
        sys.exit(EXIT_API_ERROR)
    if cert["status"] not in SETTLED_OK:
        click.echo(f"timed out: {cert_id} is still {cert['status']} after {timeout:g}s",
                   err=True)
        sys.exit(EXIT_TIMEOUT)


@main.group()
def targets() -> None:
    """Where a certificate is served (host:port), checked by `certlocker verify`."""


def _target_rows(cert: dict[str, Any]) -> str:
    rows = [f"{'TARGET':32} {'SNI':28} {'STATUS':17} IPS"]
    for tgt in cert.get("targets") or []:
        rows.append(f"{tgt['address']:32} {tgt.get('sni') or '-':28} {tgt['status']:17} "
                    f"{','.join(tgt.get('ips') or []) or '-'}")
    return "\n".join(rows) if len(rows) > 1 else f"{cert['id']} has no targets"


def _patch_targets(ctx: click.Context, cert_id: str, wanted: list[dict[str, Any]]) -> None:
    cert = ctx.obj["api"].call("PATCH", f"/v1/certificates/{cert_id}",
                               json={"targets": wanted},
                               headers={"Content-Type": "application/merge-patch+json"})
    _out(ctx, cert, _target_rows(cert))


def _spec_targets(cert: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for tgt in cert.get("targets") or []:
        item: dict[str, Any] = {"address": tgt["address"]}
        if tgt.get("sni"):
            item["sni"] = tgt["sni"]
        if tgt.get("ips"):
            item["ips"] = list(tgt["ips"])
        out.append(item)
    return out


def _given(addresses: tuple[str, ...], sni: str | None,
           ips: tuple[str, ...]) -> list[dict[str, Any]]:
    out = []
    for address in addresses:
        item: dict[str, Any] = {"address": address}
        if sni:
            item["sni"] = sni
        if ips:
            item["ips"] = list(ips)
        out.append(item)
    return out


_TARGET_OPTIONS = [
    click.option("--sni", default=None, help="server name sent to these targets"),
    click.option("--ip", "ips", multiple=True,
                 help="a node address of these targets (repeat for a pool)"),
]


def _target_options(fn: Any) -> Any:
    for option in reversed(_TARGET_OPTIONS):
        fn = option(fn)
    return fn


@targets.command("show")
@click.argument("cert_id")
@click.pass_context
def targets_show(ctx: click.Context, cert_id: str) -> None:
    """The targets of CERT_ID with their last verification status."""
    cert = ctx.obj["api"].call("GET", f"/v1/certificates/{cert_id}")
    _out(ctx, cert.get("targets") or [], _target_rows(cert))


@targets.command("set")
@click.argument("cert_id")
@click.argument("addresses", nargs=-1, metavar="[HOST:PORT]...")
@_target_options
@click.pass_context
def targets_set(ctx: click.Context, cert_id: str, addresses: tuple[str, ...],
                sni: str | None, ips: tuple[str, ...]) -> None:
    """Replace CERT_ID's targets with HOST:PORT... (none: clear them)."""
    _patch_targets(ctx, cert_id, _given(addresses, sni, ips))


@targets.command("add")
@click.argument("cert_id")
@click.argument("addresses", nargs=-1, required=True, metavar="HOST:PORT...")
@_target_options
@click.pass_context
def targets_add(ctx: click.Context, cert_id: str, addresses: tuple[str, ...],
                sni: str | None, ips: tuple[str, ...]) -> None:
    """Add targets to CERT_ID (an address already there is replaced)."""
    cert = ctx.obj["api"].call("GET", f"/v1/certificates/{cert_id}")
    added = _given(addresses, sni, ips)
    kept = [t for t in _spec_targets(cert) if t["address"] not in set(addresses)]
    _patch_targets(ctx, cert_id, kept + added)


@targets.command("remove")
@click.argument("cert_id")
@click.argument("addresses", nargs=-1, required=True, metavar="HOST:PORT...")
@click.pass_context
def targets_remove(ctx: click.Context, cert_id: str, addresses: tuple[str, ...]) -> None:
    """Remove targets from CERT_ID (each must be one of its targets)."""
    cert = ctx.obj["api"].call("GET", f"/v1/certificates/{cert_id}")
    current = _spec_targets(cert)
    unknown = sorted(set(addresses) - {t["address"] for t in current})
    if unknown:
        raise click.UsageError(f"not a target of {cert_id}: {', '.join(unknown)} (its "
                               "targets: " + (", ".join(t["address"] for t in current)
                                              or "none") + ")")
    _patch_targets(ctx, cert_id, [t for t in current if t["address"] not in set(addresses)])


@main.group()
def audit() -> None:
    """The hash-chained audit trail."""


@audit.command("list")
@click.option("--certificate", default=None, help="a certificate id (the event subject)")
@click.option("--actor", default=None)
@click.option("--action", default=None)
@click.option("--since", default=None, help="RFC 3339 time")
@click.option("--until", default=None, help="RFC 3339 time")
@click.option("--limit", default=100, show_default=True)
@click.pass_context
def audit_list(ctx: click.Context, certificate: str | None, actor: str | None,
               action: str | None, since: str | None, until: str | None, limit: int) -> None:
    """List audit events, newest first (needs a token that may read audit/)."""
    params = {k: v for k, v in {"certificate": certificate, "actor": actor, "action": action,
                                "since": since, "until": until}.items() if v}
    body = ctx.obj["api"].call("GET", "/v1/audit", params={**params, "limit": limit})
    rows = [f"{'LANE/SEQ':>9} {'TIME':27} {'ACTOR':28} {'ACTION':30} {'OUTCOME':8} SUBJECT"]
    for e in body["items"]:
        rows.append(f"{e['lane']:>2}/{e['seq']:<6} {e['time']:27} {e['actor'][:28]:28} "
                    f"{e['action'][:30]:30} {e['outcome']:8} {e['subject']}")
    _out(ctx, body, "\n".join(rows))


@audit.command("verify")
@click.option("--mount", envvar="CERTLOCKER_KV_MOUNT", default="certlocker",
              show_default=True, help="the KV v2 mount ($CERTLOCKER_KV_MOUNT)")
@click.option("--anchor", "anchors", multiple=True, metavar="[LANE:]SEQ:HASH",
              help="a lane's (seq, hash) kept outside Vault, as printed by an earlier run "
                   "(lane 0 if no lane is given): also catches a truncated tail; repeat "
                   "for several lanes")
@click.pass_context
def audit_verify(ctx: click.Context, mount: str, anchors: tuple[str, ...]) -> None:
    """Walk every lane of the trail in Vault and report the first broken link of each.

    Reads Vault directly (VAULT_ADDR, VAULT_TOKEN of a token that may read audit/, such
    as an auditor's). Prints each lane's head: keep those lines somewhere else and pass
    them back with --anchor. Exits 0 when intact, 1 when broken or denied, 3 when Vault
    is unreachable."""
    from .audit.chain import verify_lanes
    from .composition import Pools
    from .errors import CertlockerError
    from .paths import VaultPaths
    from .vault.audit_store import vault_audit_lanes
    from .vault.store import VaultStore

    addr, token = os.environ.get("VAULT_ADDR"), os.environ.get("VAULT_TOKEN")
    if not addr or not token:
        raise click.UsageError("set VAULT_ADDR and VAULT_TOKEN")
    pinned = dict(_anchor(text) for text in anchors)
    try:
        store = VaultStore.connect(addr, token, VaultPaths(mount),
                                   os.environ.get("VAULT_CACERT"))
        with Pools() as pools:  # appends nothing: the hint pool stays empty
            results = verify_lanes(vault_audit_lanes(store, pools.threads(1, "audit-head-hint")),
                                   pinned)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except CertlockerError as exc:
        click.echo(f"error: {exc.detail}", err=True)
        sys.exit(EXIT_UNREACHABLE if exc.status == 503 else EXIT_API_ERROR)
    shown = [(r.lane, r.result) for r in results
             if r.result.head or not r.result.ok or r.lane in pinned]
    ok = all(r.result.ok for r in results)
    body = {"ok": ok, "checked": sum(r.result.checked for r in results),
            "lanes": [{"lane": lane, "ok": v.ok, "checked": v.checked,
                       "first_bad_seq": v.first_bad_seq, "problem": v.problem,
                       "head": {"seq": v.head[0], "hash": v.head[1]} if v.head else None}
                      for lane, v in shown]}
    broken = sum(not r.result.ok for r in results)
    lines = [f"ok: {body['checked']} events in {len(shown)} lane(s) verified" if ok
             else f"BROKEN: {broken} lane(s)"]
    for lane, v in shown:
        if not v.ok:
            lines.append(f"lane {lane}: BROKEN at seq {v.first_bad_seq}: {v.problem}")
        elif v.head:
            lines.append(f"lane {lane}: ok, {v.checked} events; "
                         f"anchor {lane}:{v.head[0]}:{v.head[1]}")
    _out(ctx, body, "\n".join(lines))
    if not ok:
        sys.exit(EXIT_API_ERROR)


def _anchor(text: str) -> tuple[int, tuple[int, str]]:
    parts = text.split(":")
    if len(parts) == 2:
        parts.insert(0, "0")
    if (len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit()
            or len(parts[2]) != 64):
        raise click.UsageError("--anchor must be [LANE:]SEQ:HASH (HASH: 64 hex digits)")
    return int(parts[0]), (int(parts[1]), parts[2].lower())


@main.group()
def grants() -> None:
    """Which names a service may carry (administrators grant; default deny)."""


def _grant_text(body: dict[str, Any]) -> str:
    lines = [f"grants/{body['environment']}/{body['service']} (version {body['version']})"]
    for field in ("dns_names", "zones", "shared"):
        lines.append(f"  {field:<10} {', '.join(body[field]) or '-'}")
    return "\n".join(lines)


@grants.command("show")
@click.argument("environment")
@click.argument("service")
@click.pass_context
def grants_show(ctx: click.Context, environment: str, service: str) -> None:
    """The names granted to SERVICE in ENVIRONMENT."""
    body = ctx.obj["api"].call("GET", f"/v1/grants/{environment}/{service}")
    _out(ctx, body, _grant_text(body))


@grants.command("add")
@click.argument("environment")
@click.argument("service")
@click.option("--dns", "dns_names", multiple=True, help="an exact name (repeatable)")
@click.option("--zone", "zones", multiple=True,
              help="a zone and every name under it (repeatable)")
@click.option("--shared", multiple=True,
              help="a name the service may carry while another holds it (repeatable)")
@click.pass_context
def grants_add(ctx: click.Context, environment: str, service: str,
               dns_names: tuple[str, ...], zones: tuple[str, ...],
               shared: tuple[str, ...]) -> None:
    """Add names to SERVICE's grant (needs an administrator's Vault token)."""
    if not (dns_names or zones or shared):
        raise click.UsageError("name at least one --dns, --zone or --shared")
    api = ctx.obj["api"]
    current = api.call("GET", f"/v1/grants/{environment}/{service}")
    merged = {field: list(dict.fromkeys([*current[field], *extra]))
              for field, extra in (("dns_names", dns_names), ("zones", zones),
                                   ("shared", shared))}
    body = api.call("PUT", f"/v1/grants/{environment}/{service}", json=merged)
    _out(ctx, body, _grant_text(body))


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
    if out:
        _check_writable(Path(out))  # before minting: a credential nobody keeps is lost
    body = ctx.obj["api"].call("POST", f"/v1/services/{environment}/{service}/credentials")
    if out:
        try:
            _write_secret_file(Path(out), body["token"])
        except OSError as exc:
            click.echo(f"error: the credential was minted but cannot be written to {out}: "
                       f"{exc.strerror}; mint again to a writable file", err=True)
            sys.exit(EXIT_API_ERROR)
        shown = dict(body, token=f"(written to {out})")
        _out(ctx, shown, f"credential written to {out}, expires {body['expires_at']}\n"
             f"login: bao write auth/{body['vault']['auth_path']}/login "
             f"role={body['vault']['role']} jwt=@{out}")
    else:
        _out(ctx, body, body["token"])


@credentials.command("revoke")
@click.argument("environment")
@click.argument("service")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@click.pass_context
def credentials_revoke(ctx: click.Context, environment: str, service: str,
                       yes: bool) -> None:
    """Revoke every credential of SERVICE at once (its agents can no longer log in)."""
    _confirm(ctx, yes, f"Revoke every credential of {environment}/{service}? Its agents "
                       "stop logging in to Vault until given a new one.")
    body = ctx.obj["api"].call("DELETE", f"/v1/services/{environment}/{service}/credentials")
    _out(ctx, body, f"revoked; {environment}/{service} is now at generation "
                    f"{body['generation']}")


@credentials.command("refresh")
@click.argument("environment")
@click.argument("service")
@click.option("--credential-file", type=click.Path(dir_okay=False), required=True,
              help="the current credential; replaced atomically by the fresh one (0600)")
@click.pass_context
def credentials_refresh(ctx: click.Context, environment: str, service: str,
                        credential_file: str) -> None:
    """Trade the credential in --credential-file for a fresh one (run by the service's
    host, e.g. from a systemd timer; needs no Vault token). The file is left untouched
    if the API refuses (expired, revoked or foreign credential: exit 1)."""
    path = Path(credential_file)
    try:
        current = path.read_text().strip()
    except OSError as exc:
        raise click.UsageError(f"cannot read {path}: {exc.strerror}") from None
    if not current:
        raise click.UsageError(f"{path} is empty")
    api = Api(ctx.obj["api"].url, None)  # the service's own credential, no Vault token
    body = api.call("POST", f"/v1/services/{environment}/{service}/credentials/refresh",
                    headers={"Authorization": f"Bearer {current}"})
    _write_secret_file(path, body["token"])
    _out(ctx, dict(body, token=f"(written to {path})"),
         f"credential refreshed in {path}, expires {body['expires_at']}")


@credentials.command("rotate-signing-key")
@click.pass_context
def credentials_rotate_signing_key(ctx: click.Context) -> None:
    """Make a new JWT signing key (needs update on the specs/_system/signing-keys grant).
    Credentials signed by the previous key keep working until they expire."""
    body = ctx.obj["api"].call("POST", "/v1/system/signing-keys/rotate")
    _out(ctx, body, f"signing key rotated: {body['previous_kid']} -> {body['kid']}\n"
                    f"published: {', '.join(body['published'])}")


def _check_writable(path: Path) -> None:
    """:raises click.UsageError: when ``path`` cannot be written (a missing or read-only
    folder, a directory in its place)."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise click.UsageError(f"--out {path} is a directory; name a file")
    if not folder.is_dir():
        raise click.UsageError(f"--out {path}: the folder {folder} does not exist "
                               f"(create it first: mkdir -p {folder})")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise click.UsageError(f"--out {path}: the folder {folder} is not writable")


def _write_secret_file(path: Path, content: str) -> None:
    """Write ``content`` to ``path`` atomically with mode 0600: a reader sees the old or
    the new file, never a partial one."""
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- discovery: endpoint and directory scans, unmanaged certificates ------------------

@main.group()
def scan() -> None:
    """Find certificates certlocker does not manage (shadow certificates)."""


@scan.command("endpoints")
@click.argument("specs", nargs=-1, required=True, metavar="HOST:PORTS...")
@click.option("--sni", default=None, help="server name sent to every endpoint")
@click.option("--timeout", type=float, default=None, help="seconds per handshake")
@click.option("--parallelism", type=int, default=None, help="handshakes at once")
@click.option("--poll", type=float, default=1.0, show_default=True,
              help="seconds between progress checks")
@click.pass_context
def scan_endpoints_cmd(ctx: click.Context, specs: tuple[str, ...], sni: str | None,
                       timeout: float | None, parallelism: int | None, poll: float) -> None:
    """Scan endpoints through the API, e.g. 127.0.0.1:8000-8010 10.0.0.0/30:443.

    Unmanaged certificates found are recorded (see `certlocker discovery list`).
    Exits 1 if the scan failed."""
    import time

    body: dict[str, Any] = {"endpoints": list(specs)}
    for key, value in (("sni", sni), ("timeout", timeout), ("parallelism", parallelism)):
        if value is not None:
            body[key] = value
    api = ctx.obj["api"]
    doc = api.call("POST", "/v1/discovery/scans", json=body)
    show_progress = _show_progress(ctx)
    while doc["state"] in ("queued", "running"):
        if show_progress:
            click.echo(f"\rscanning {doc['done']}/{doc['total']} endpoints", nl=False,
                       err=True)
        time.sleep(max(0.1, poll))
        doc = api.call("GET", f"/v1/discovery/scans/{doc['id']}")
    if show_progress:
        click.echo(f"\rscanned {doc['done']}/{doc['total']} endpoints", err=True)
    result = doc.get("result") or {}
    _out(ctx, doc, _scan_table(result) if doc["state"] == "done"
         else f"scan {doc['state']}: {doc.get('error') or ''}")
    if doc["state"] != "done":
        sys.exit(EXIT_API_ERROR)


@scan.command("dir")
@click.argument("path", type=click.Path(exists=True))
@click.option("--password", "passwords", multiple=True,
              help="a PKCS#12 password to try (repeat; prefer --password-file)")
@click.option("--password-file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="PKCS#12 passwords to try, one per line")
@click.option("--report", is_flag=True,
              help="send the findings (public facts only, never keys) to certlocker")
@click.option("--host", default=None, help="host name findings are reported under "
                                           "[default: this host's name]")
@click.pass_context
def scan_dir(ctx: click.Context, path: str, passwords: tuple[str, ...],
             password_file: str | None, report: bool, host: str | None) -> None:
    """Scan PATH on this host for PEM, DER and PKCS#12 certificates."""
    import socket

    from .discovery.files import scan_files

    tried = list(passwords)
    if password_file:
        tried += [line for line in Path(password_file).read_text().splitlines() if line]
    found = scan_files(path, passwords=tried)
    local = {"files_scanned": found.files_scanned, "truncated": found.truncated,
             "found": [f.to_json() for f in found.found],
             "skipped": [{"path": s.path, "reason": s.reason} for s in found.skipped],
             "key_files": list(found.key_files)}
    rows = [f"{'SHA-256':16} {'EXPIRES':20} {'CA':3} {'SOURCE':40} SUBJECT"]
    for f in found.found:
        rows.append(f"{f.sha256_fingerprint[:16]} {f.not_after:%Y-%m-%d %H:%M:%S} "
                    f"{'yes' if f.is_ca else 'no':3} {f.source[5:]:40} {f.subject}")
    rows += [f"skipped {s.path}: {s.reason}" for s in found.skipped]
    rows.append(f"{found.files_scanned} files scanned, {len(found.found)} certificates, "
                f"{len(found.key_files)} files with private keys (not read out)"
                + (", TRUNCATED" if found.truncated else ""))
    if not report:
        _out(ctx, local, "\n".join(rows))
        return
    who = host or socket.gethostname().split(".")[0] or "localhost"
    totals: dict[str, Any] = {"managed": [], "unmanaged": [], "counts": {}}
    for batch in _batches([f.to_json() for f in found.found], 32 * 1024):
        answer = ctx.obj["api"].call("POST", "/v1/discovery/findings",
                                     json={"host": who, "findings": batch})
        totals["managed"] += answer["managed"]
        totals["unmanaged"] += answer["unmanaged"]
        for key, value in answer["counts"].items():
            totals["counts"][key] = totals["counts"].get(key, 0) + value
    _out(ctx, {**local, "report": totals},
         "\n".join(rows) + f"\nreported as host {who}:\n" + _scan_table(totals))


def _batches(items: list[dict[str, Any]], max_bytes: int) -> list[list[dict[str, Any]]]:
    """Split findings so each request body stays under the API's size limit."""
    out: list[list[dict[str, Any]]] = [[]]
    size = 0
    for item in items:
        length = len(json.dumps(item)) + 2
        if out[-1] and size + length > max_bytes:
            out.append([])
            size = 0
        out[-1].append(item)
        size += length
    return out


def _scan_table(result: dict[str, Any]) -> str:
    rows = [f"{'':9} {'SHA-256':16} {'EXPIRES':22} {'SOURCE':32} WHAT"]
    for u in result.get("unmanaged") or []:
        flag = "EXPIRED" if u.get("expired") else ("EXPIRING" if u.get("expiring_soon")
                                                   else "")
        rows.append(f"{'unmanaged':9} {u['sha256_fingerprint'][:16]} {u['not_after']:22} "
                    f"{u['source']:32} {u['subject']} {flag}".rstrip())
    for m in result.get("managed") or []:
        rows.append(f"{'managed':9} {m['sha256_fingerprint'][:16]} {'':22} "
                    f"{m['source']:32} {m['certificate_id']}")
    counts = result.get("counts") or {}
    rows.append(f"{counts.get('unmanaged', 0)} unmanaged, {counts.get('managed', 0)} managed, "
                f"{counts.get('ca_certificates', 0)} CA certificates, "
                f"{counts.get('errors', 0)} endpoints without a certificate")
    return "\n".join(rows)


@main.group()
def discovery() -> None:
    """Unmanaged certificates found by scans: list, show, adopt."""


@discovery.command("list")
@click.option("--expiring-within", default=None, help="e.g. 30d, 720h")
@click.option("--state", type=click.Choice(["unmanaged", "adopted", "all"]),
              default="unmanaged", show_default=True)
@click.pass_context
def discovery_list(ctx: click.Context, expiring_within: str | None, state: str) -> None:
    """List discovered certificates, soonest expiry first."""
    params = {"state": state, "limit": "1000"}
    if expiring_within:
        params["expiring_within"] = expiring_within
    body = ctx.obj["api"].call("GET", "/v1/discovery", params=params)
    if body.get("total", 0) > len(body["items"]):
        click.echo(f"note: showing the {len(body['items'])} soonest to expire of "
                   f"{body['total']}; narrow with --expiring-within", err=True)
    rows = [f"{'SHA-256':16} {'STATE':9} {'EXPIRES':22} {'':8} {'SUBJECT':32} SOURCES"]
    for d in body["items"]:
        flag = "EXPIRED" if d["expired"] else ("EXPIRING" if d["expiring_soon"] else "")
        rows.append(f"{d['sha256_fingerprint'][:16]} {d['state']:9} {d['not_after']:22} "
                    f"{flag:8} {d['subject'][:32]:32} "
                    f"{', '.join(s['source'] for s in d['sources'])}")
    _out(ctx, body, "\n".join(rows))


@discovery.command("show")
@click.argument("sha256")
@click.pass_context
def discovery_show(ctx: click.Context, sha256: str) -> None:
    """Show one discovered certificate with every place it was found."""
    d = ctx.obj["api"].call("GET", f"/v1/discovery/{sha256}")
    lines = [f"sha256:      {d['sha256_fingerprint']}", f"state:       {d['state']}",
             f"subject:     {d['subject']}", f"names:       {', '.join(d['dns_names'])}",
             f"issuer:      {d['issuer']}", f"serial:      {d['serial']}",
             f"expires:     {d['not_after']}"
             + (" (EXPIRING)" if d["expiring_soon"] else ""),
             f"owner:       {d['owner'] or 'unknown'}"]
    lines += [f"found at:    {s['source']} (last {s['last_seen']})" for s in d["sources"]]
    if d.get("adoption"):
        lines.append(f"adopted as:  {d['adoption']['certificate_id']}")
    _out(ctx, d, "\n".join(lines))


@discovery.command("adopt")
@click.argument("sha256")
@click.argument("environment")
@click.argument("service")
@click.argument("name")
@click.option("--issuer", default=None)
@click.option("--wait", default=60.0, show_default=True, help="seconds to wait for issuance")
@click.pass_context
def discovery_adopt(ctx: click.Context, sha256: str, environment: str, service: str,
                    name: str, issuer: str | None, wait: float) -> None:
    """Manage a discovered certificate's DNS names as ENVIRONMENT/SERVICE/NAME."""
    body: dict[str, Any] = {"environment": environment, "service": service, "name": name}
    if issuer:
        body["issuer"] = issuer
    with _progress(ctx, f"adopting as {environment}.{service}.{name}"):
        answer = ctx.obj["api"].call("POST", f"/v1/discovery/{sha256}/adopt?wait={wait:g}",
                                     json=body)
    _out(ctx, answer, _describe(answer["certificate"]))
    _settle(ctx, answer["certificate"], wait)


# -- on a service's host ----------------------------------------------------------------

@main.command()
@click.argument("cert_id")
@click.option("--format", "fmt", required=True,
              help="haproxy, nginx, pem, kubernetes, der, pkcs12, pkcs12-legacy, java")
@click.option("--credential-file", type=click.Path(dir_okay=False, exists=True),
              required=True, help="the service's certlocker credential (JWT)")
@click.option("--out", type=click.Path(), required=True,
              help="file to write (0600, atomic); a directory for nginx and pem")
@click.option("--password-file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="PKCS#12 password (pkcs12, pkcs12-legacy, java), first line")
@click.option("--alias", default=None, help="java: keystore alias (default: the name)")
@click.option("--k8s-name", default=None, help="kubernetes: Secret name")
@click.option("--k8s-namespace", default=None, help="kubernetes: namespace")
@click.pass_context
def fetch(ctx: click.Context, cert_id: str, fmt: str, credential_file: str, out: str,
          password_file: str | None, alias: str | None, k8s_name: str | None,
          k8s_namespace: str | None) -> None:
    """Fetch CERT_ID rendered as --format, with the service's own credential (for hosts
    without an agent). Operators' Vault tokens cannot fetch keys."""
    from .delivery.fetch import FetchFailed, fetch_bundle, install
    from .errors import CertlockerError

    credential = Path(credential_file).read_text().strip()
    password = None
    if password_file:
        lines = Path(password_file).read_text().splitlines()
        password = lines[0] if lines else ""
    try:
        fetched = fetch_bundle(ctx.obj["api"].url, cert_id, fmt, credential,
                               password=password, alias=alias, k8s_name=k8s_name,
                               k8s_namespace=k8s_namespace)
        written = install(fetched, Path(out))
    except FetchFailed as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_API_ERROR)
    except requests.RequestException as exc:
        click.echo(f"error: cannot reach certlocker at {ctx.obj['api'].url}: "
                   f"{type(exc).__name__}", err=True)
        sys.exit(EXIT_UNREACHABLE)
    except CertlockerError as exc:
        raise click.UsageError(exc.detail) from None
    _out(ctx, {"written": [str(p) for p in written], "sha256": fetched.sha256,
               "serial": fetched.serial},
         f"wrote {', '.join(map(str, written))} (serial {fetched.serial}, "
         f"sha256 {fetched.sha256})")


@main.group()
def deliver() -> None:
    """Install a rendered certificate into a server (for an agent's exec command)."""


@deliver.command("haproxy-runtime")
@click.option("--socket", "socket_address", required=True,
              help="HAProxy stats socket (level admin): a path, or host:port")
@click.option("--timeout", default=10.0, show_default=True)
@click.argument("staged", type=click.Path(dir_okay=False, exists=True))
@click.argument("crt_path", type=click.Path(dir_okay=False))
@click.pass_context
def deliver_haproxy_runtime(ctx: click.Context, socket_address: str, timeout: float,
                            staged: str, crt_path: str) -> None:
    """Write STAGED over CRT_PATH (atomically, 0600) and swap it into the running HAProxy
    with `set ssl cert` + `commit ssl cert`: no reload. CRT_PATH must be the file a
    `crt` line names. On refusal the previous file is put back and the exit code is 1."""
    from .delivery.haproxy_runtime import deliver as hot_deliver
    from .errors import CertlockerError

    try:
        update = hot_deliver(socket_address, Path(staged), Path(crt_path), timeout)
    except CertlockerError as exc:
        click.echo(f"certlocker deliver: {exc.detail}", err=True)
        sys.exit(EXIT_UNREACHABLE if exc.status == 503 else EXIT_API_ERROR)
    except OSError as exc:
        click.echo(f"certlocker deliver: {staged}: {exc.strerror}", err=True)
        sys.exit(EXIT_API_ERROR)
    verb = "updated in memory" if update.changed else "already current in"
    _out(ctx, {"crt_path": str(update.crt_path), "sha256": update.sha256,
               "changed": update.changed},
         f"certlocker deliver: {update.crt_path} {verb} HAProxy (sha256 {update.sha256})")


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
            boot.grant_declared_names()
            if token_file:
                boot.token(Path(token_file), "certlocker", "certlocker",
                           default_policy=False)
            if operator_token_file:
                boot.token(Path(operator_token_file), "certlocker-operator-admin",
                           "certlocker-operator")
        if phase in ("all", "auth"):
            boot.jwt_trust()
    except CertlockerError as exc:
        click.echo(f"error: {exc.detail}", err=True)
        sys.exit(EXIT_UNREACHABLE if exc.status == 503 else EXIT_API_ERROR)
    ctx = click.get_current_context()
    _out(ctx, {"changed": list(boot.report.changed), "unchanged": list(boot.report.unchanged)},
         "\n".join([f"changed    {item}" for item in boot.report.changed]
                   + [f"unchanged  {item}" for item in boot.report.unchanged]))


@main.command()
@click.option("--once", is_flag=True, help="one full sweep and one tick, then exit")
@click.option("--interval", type=float, default=None,
              help="seconds between ticks [default: reconcile_interval_seconds, 60]")
@click.option("--jitter", default=0.1, show_default=True,
              help="+/- this fraction of the interval")
@click.option("--sweep-interval", type=float, default=None,
              help="a sweep pass begins at most this often "
                   "[default: reconcile_sweep_seconds]")
@click.option("--duration", type=float, default=None,
              help="stop after this many seconds (default: run until SIGTERM)")
def reconcile(once: bool, interval: float | None, jitter: float,
              sweep_interval: float | None, duration: float | None) -> None:
    """Run the reconciler: issue, reissue and renew every certificate toward its spec
    (certlocker's settings and Vault token, as the API)."""
    from .reconcile_cmd import main as run

    if (interval is not None and interval <= 0) or not 0 <= jitter < 1:
        raise click.UsageError("--interval must be > 0 and --jitter in [0, 1)")
    sys.exit(run(once=once, interval=interval, jitter=jitter, sweep_interval=sweep_interval,
                 duration=duration))


# -- mass replacement ---------------------------------------------------------------------

REPLACE_WAIT_DEFAULT = 3600.0


@main.group(invoke_without_command=True)
@click.option("--issuer", default=None, help="a configured issuer's name")
@click.option("--intermediate", "issuing_intermediate", default=None,
              help="issuer DN substring, or the SHA-256 of the issuing intermediate")
@click.option("--serial", "serials", multiple=True, help="a current serial (repeat)")
@click.option("--names", default=None, help="a glob over DNS names, e.g. '*.example.com'")
@click.option("--environment", default=None)
@click.option("--service", default=None, help="needs --environment")
@click.option("--all", "everything", is_flag=True, help="every certificate you may list")
@click.option("--revoke-old", is_flag=True,
              help="revoke each old certificate once its replacement is served everywhere")
@click.option("--revocation-reason", default=None, help="RFC 5280 name [superseded]")
@click.option("--reason", default=None, help="why (kept in the record and audit trail)")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="follow the operation until it is done")
@click.option("--timeout", default=REPLACE_WAIT_DEFAULT, show_default=True,
              help="seconds to follow it")
@click.option("--poll", default=2.0, show_default=True, help="seconds between looks")
@click.option("--json", "json_flag", is_flag=True, expose_value=False, is_eager=True,
              callback=_json_flag, help="print JSON for scripts")
@click.pass_context
def replace(ctx: click.Context, issuer: str | None, issuing_intermediate: str | None,
            serials: tuple[str, ...], names: str | None, environment: str | None,
            service: str | None, everything: bool, revoke_old: bool,
            revocation_reason: str | None, reason: str | None, wait: bool, timeout: float,
            poll: float) -> None:
    """Replace every selected certificate (most urgent first), then deliver, verify
    every node and, with --revoke-old, revoke the old ones. Shows a progress bar until
    the operation is done (--no-wait: only start it). `certlocker replace status ID`
    shows one operation; `certlocker replace list` all of them."""
    if ctx.invoked_subcommand is not None:
        return
    body: dict[str, Any] = {k: v for k, v in {
        "issuer": issuer, "issuing_intermediate": issuing_intermediate,
        "serials": list(serials) or None, "names": names, "environment": environment,
        "service": service, "all": True if everything else None,
        "revocation_reason": revocation_reason, "reason": reason}.items() if v is not None}
    if revoke_old:
        body["revoke_old"] = True
    op = ctx.obj["api"].call("POST", "/v1/replacements", json=body)
    if not wait:
        _out(ctx, op, _describe_replacement(op))
        return
    _follow_replacement(ctx, op, timeout, poll)


def _describe_replacement(op: dict[str, Any]) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in (op.get("counts") or {}).items() if v)
    eta = op.get("eta_seconds")
    lines = [f"replacement: {op['id']}",
             f"state:       {op['state']} ({op.get('finished', 0)}/{op['selected']} "
             "finished)",
             f"selector:    {json.dumps(op.get('selector') or {})}",
             f"started:     {op['created_at']} by {op.get('created_by') or '-'}",
             f"counts:      {counts or '-'}"]
    if op.get("revoke_old"):
        lines.append(f"revoke old:  yes ({op.get('revocation_reason')})")
    if eta is not None and op["state"] != "done":
        lines.append(f"eta:         {eta:.0f}s")
    if op.get("done_at"):
        lines.append(f"done:        {op['done_at']}")
    for failure in op.get("failures") or []:
        lines.append(f"failing:     {failure['id']}: {failure.get('last_error') or '-'}")
    return "\n".join(lines)


def _follow_replacement(ctx: click.Context, op: dict[str, Any], timeout: float,
                        poll: float) -> None:
    """A progress bar on stderr (when shown) until the operation is done; exit 4 when
    ``timeout`` runs out first."""
    api = ctx.obj["api"]
    deadline = time.monotonic() + timeout
    shown = _show_progress(ctx)
    total = int(op["selected"])
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(click.progressbar(
            length=total, label=f"replacing {total}", file=sys.stderr, show_pos=True,
            show_eta=False)) if shown else None
        done = 0
        while True:
            finished = int(op.get("finished") or 0)
            if bar is not None and finished > done:
                bar.update(finished - done)
                done = finished
            if op["state"] == "done" or time.monotonic() >= deadline:
                break
            time.sleep(poll)
            op = api.call("GET", f"/v1/replacements/{op['id']}", params={"items": "false"})
    _out(ctx, op, _describe_replacement(op))
    if op["state"] != "done":
        click.echo(f"timed out: replacement {op['id']} is still running; follow it with: "
                   f"certlocker replace status {op['id']}", err=True)
        sys.exit(EXIT_TIMEOUT)


@replace.command("status")
@click.argument("op_id")
@click.option("--items", "with_items", is_flag=True, help="one row per certificate")
@click.pass_context
def replace_status(ctx: click.Context, op_id: str, with_items: bool) -> None:
    """Show one replacement operation and its progress."""
    op = ctx.obj["api"].call("GET", f"/v1/replacements/{op_id}",
                             params={"items": "true" if with_items else "false"})
    rows = [_describe_replacement(op)]
    if with_items:
        rows.append(f"\n{'ID':40} {'STATE':16} {'OLD SERIAL':36} NEW SERIAL")
        rows += [f"{i['id']:40} {i['state']:16} {i['old_serial']:36} {i.get('serial') or '-'}"
                 for i in op.get("items") or []]
    _out(ctx, op, "\n".join(rows))


@replace.command("list")
@click.pass_context
def replace_list(ctx: click.Context) -> None:
    """Every replacement operation you may see, newest first."""
    body = ctx.obj["api"].call("GET", "/v1/replacements")
    rows = [f"{'ID':34} {'STATE':8} {'FINISHED':>9} {'SELECTED':>9} CREATED"]
    rows += [f"{o['id']:34} {o['state']:8} {o.get('finished', 0):>9} {o['selected']:>9} "
             f"{o['created_at']}" for o in body["items"]]
    _out(ctx, body, "\n".join(rows))


_accept_json_everywhere(main)


@main.command("acme-account")
@click.argument("environment")
@click.argument("service")
@click.pass_context
def acme_account(ctx: click.Context, environment: str, service: str) -> None:
    """Create an External Account Binding for a stock ACME client of SERVICE: its
    directory URL, eab_kid and eab_hmac_key (shown once). The client may then order the
    names SERVICE is granted; revoking SERVICE's credentials stops it."""
    body = ctx.obj["api"].call("POST", f"/v1/services/{environment}/{service}/acme-accounts")
    _out(ctx, body, f"directory: {body['directory_url']}\n"
                    f"eab_kid: {body['eab_kid']}\n"
                    f"eab_hmac_key: {body['eab_hmac_key']}\n"
                    f"e.g. certbot certonly --server {body['directory_url']} "
                    f"--eab-kid={body['eab_kid']} --eab-hmac-key={body['eab_hmac_key']} "
                    f"-d <name>\n"
                    "(the HMAC key is not shown again)")
