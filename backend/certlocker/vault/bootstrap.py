"""Apply certlocker's Vault configuration idempotently, from the files in policies/.

Everything here can be done by hand with the stock CLI; README "Vault by hand" shows
the same steps. Each step reads first and writes only what differs, so running it twice
changes nothing.

Run with an administrator's token (root in the dev stack). Two phases: ``vault`` (KV
mount, auth mounts, policies, tokens) can run before the API exists; ``auth`` configures
JWT trust in certlocker's JWKS, which Vault fetches at config time, so the API must be up.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions as hx

from ..errors import InvalidInput
from ..models import CertificateRef
from ..ownership import parse_grant
from ..settings import Settings
from ..specs import SpecRules, from_record
from . import hvac_compat
from .client import translated
from .pki import sign_policy

log = logging.getLogger(__name__)

SERVICE_POLICY_FILE = "service.hcl"
OWN_POLICY = "certlocker"
SERVICE_ROLE_TOKEN_TTL = 3600


def policy_name(stem: str, environment: str | None = None) -> str:
    if stem == "certlocker":
        return OWN_POLICY
    if stem == "service":
        assert environment is not None
        return f"certlocker-service-{environment}"
    return f"certlocker-{stem}"


def render_policy(text: str, mount: str, environment: str | None = None,
                  pki_sign: str = "") -> str:
    """``pki_sign``: the stanzas for ``@PKI_SIGN@`` (``vault.pki.sign_policy``)."""
    text = text.replace("@MOUNT@", mount).replace("@PKI_SIGN@", pki_sign)
    if environment is not None:
        text = text.replace("@ENVIRONMENT@", environment)
    if "@MOUNT@" in text or "@ENVIRONMENT@" in text:
        raise ValueError("a policy placeholder was left unrendered")
    return text


_SCAN_ONLY = re.compile(r'path "[^"]+" \{\s*capabilities = \["scan"\]\s*\}\n?')


def without_scan(hcl: str) -> str:
    """``hcl`` without the stanzas that grant only ``scan`` (an OpenBao capability)."""
    return _SCAN_ONLY.sub("", hcl)


def rendered_policies(policies_dir: Path, settings: Settings) -> dict[str, str]:
    """Policy name -> HCL, rendered for this deployment."""
    out: dict[str, str] = {}
    for file in sorted(policies_dir.glob("*.hcl")):
        text = file.read_text()
        if file.name == SERVICE_POLICY_FILE:
            for env in settings.environments:
                out[policy_name("service", env)] = render_policy(text, settings.kv_mount, env)
        else:
            out[policy_name(file.stem)] = render_policy(
                text, settings.kv_mount, pki_sign=sign_policy(settings.issuers.values()))
    return out


@dataclasses.dataclass
class BootstrapReport:
    changed: list[str] = dataclasses.field(default_factory=list)
    unchanged: list[str] = dataclasses.field(default_factory=list)

    def note(self, what: str, changed: bool) -> None:
        (self.changed if changed else self.unchanged).append(what)


class Bootstrapper:
    def __init__(self, client: hvac.Client, settings: Settings, policies_dir: Path) -> None:
        self.client = client
        self.settings = settings
        self.policies_dir = policies_dir
        self.report = BootstrapReport()

    # -- phase "vault" ---------------------------------------------------------------
    def kv_mount(self) -> None:
        mount = self.settings.kv_mount
        with translated("sys/mounts"):
            mounts = self.client.sys.list_mounted_secrets_engines()["data"]
            existing = mounts.get(mount + "/")
            if existing is None:
                self.client.sys.enable_secrets_engine(
                    "kv", path=mount, options={"version": "2"},
                    description="certlocker: specs, status, certificates, audit")
                self.report.note(f"kv-v2 mount {mount}/", True)
                return
        if existing["type"] != "kv" or (existing.get("options") or {}).get("version") != "2":
            raise RuntimeError(f"{mount}/ exists but is not a KV v2 mount")
        self.report.note(f"kv-v2 mount {mount}/", False)

    def auth_mounts(self) -> dict[str, str]:
        """Enable one JWT auth mount per environment; return env -> accessor."""
        accessors = {}
        with translated("sys/auth"):
            existing = self.client.sys.list_auth_methods()["data"]
            for env in self.settings.environments:
                path = self.settings.paths.auth_mount(env)
                if path + "/" not in existing:
                    self.client.sys.enable_auth_method(
                        "jwt", path=path,
                        description=f"certlocker service credentials, environment {env}")
                    self.report.note(f"auth mount {path}/", True)
                    existing = self.client.sys.list_auth_methods()["data"]
                else:
                    self.report.note(f"auth mount {path}/", False)
                accessors[env] = existing[path + "/"]["accessor"]
        return accessors

    def policies(self) -> None:
        for name, hcl in rendered_policies(self.policies_dir, self.settings).items():
            with translated(f"sys/policy/{name}"):
                try:
                    current = self.client.sys.read_policy(name)["data"]["rules"]
                except hx.InvalidPath:
                    current = None
                if current in (hcl, without_scan(hcl)):
                    self.report.note(f"policy {name}", False)
                    continue
                try:
                    self.client.sys.create_or_update_policy(name, hcl)
                except hx.InvalidRequest:
                    # HashiCorp Vault has no `scan` capability and refuses the policy: the
                    # spec watch then lists instead (docs/decisions/0006-spec-watch.md).
                    if without_scan(hcl) == hcl:
                        raise
                    self.client.sys.create_or_update_policy(name, without_scan(hcl))
                    log.warning("bootstrap.policy_without_scan", extra={"policy": name})
            self.report.note(f"policy {name}", True)

    def grant_declared_names(self) -> None:
        """Grant every service the names its certificates already carry (name ownership
        is default deny: without this, an upgrade would refuse every renewal of a
        certificate issued before it). Only issued names: a spec written but never
        issued gets nothing, so nobody gains a name by writing a spec before an upgrade.
        A grant that covers them is left alone."""
        mount, paths = self.settings.kv_mount, self.settings.paths
        kv = self.client.secrets.kv.v2
        # Names only: bootstrap's settings may not carry the issuers (an admin's shell).
        rules = SpecRules(environments=tuple(self.settings.environments))

        def listed(folder: str) -> list[str]:
            with translated(f"{mount}/metadata/{folder}"):
                try:
                    return list(kv.list_secrets(path=folder, mount_point=mount)["data"]["keys"])
                except hx.InvalidPath:
                    return []

        def read(path: str) -> dict[str, Any] | None:
            with translated(f"{mount}/data/{path}"):
                try:
                    return dict(kv.read_secret_version(path=path, mount_point=mount,
                                                       raise_on_deleted_version=True)[
                        "data"]["data"] or {})
                except hx.InvalidPath:
                    return None

        granted = 0
        for env in (e.rstrip("/") for e in listed(paths.specs_dir()) if e.endswith("/")):
            for service in (s.rstrip("/") for s in listed(paths.specs_dir(env))
                            if s.endswith("/")):
                wanted: list[str] = []
                for name in listed(paths.specs_dir(env, service)):
                    if name.endswith("/") or name.startswith("_"):
                        continue
                    ref = CertificateRef(env, service, name)
                    record, status = read(paths.spec(ref)), read(paths.status(ref))
                    current = (status or {}).get("current") or {}
                    if record and current.get("dns_names"):
                        spec = from_record(record, ref, rules)
                        wanted.extend(n for n in spec.dns_names
                                      if n in current["dns_names"])
                try:
                    grant = parse_grant(read(paths.grant(env, service)))
                except InvalidInput:
                    log.warning("bootstrap.grant_invalid", extra={"grant": f"{env}/{service}"})
                    continue
                missing = [n for n in dict.fromkeys(wanted) if not grant.covers(n)]
                if not missing:
                    continue
                with translated(f"{mount}/data/{paths.grant(env, service)}"):
                    kv.create_or_update_secret(path=paths.grant(env, service),
                                               secret=grant.with_names(missing).to_record(),
                                               mount_point=mount)
                log.info("bootstrap.granted", extra={"grant": f"{env}/{service}",
                                                     "names": missing})
                granted += 1
        self.report.note(f"name grants covering issued certificates ({granted} services "
                         "granted)" if granted else
                         "name grants covering issued certificates", bool(granted))

    def token(self, file: Path, policy: str, display: str, *,
              default_policy: bool = True) -> None:
        """Keep a valid periodic token with ``policy`` in ``file`` (0600); with
        ``default_policy=False`` one without Vault's ``default`` policy (a token that
        still has it is replaced; the old one stays valid until its period ends)."""
        wanted = {policy} | ({"default"} if default_policy else set())
        if file.exists():
            probe = hvac.Client(url=self.client.adapter.base_uri, token=file.read_text().strip(),
                                verify=hvac_compat.adapter_verify(self.client.adapter))
            try:
                data = probe.auth.token.lookup_self()["data"]
                if set(data.get("policies") or []) == wanted:
                    self.report.note(f"token {display}", False)
                    return
            except (hx.Forbidden, hx.Unauthorized):
                pass
        with translated("auth/token/create-orphan"):
            resp = self.client.auth.token.create_orphan(
                policies=[policy], period="24h", display_name=display, renewable=True,
                no_default_policy=not default_policy)
        file.parent.mkdir(parents=True, exist_ok=True)
        # Written beside the file and renamed over it: a running certlocker follows the
        # file (vault.client.TokenFile) and must never read half of it.
        staged = file.with_name(f".{file.name}.new")
        staged.unlink(missing_ok=True)
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(resp["auth"]["client_token"] + "\n")
        os.replace(staged, file)
        self.report.note(f"token {display}", True)

    # -- phase "auth" ----------------------------------------------------------------
    def jwt_trust(self) -> None:
        s = self.settings
        for env in s.environments:
            mount = s.paths.auth_mount(env)
            wanted_config = {
                "jwks_url": s.jwks_url,
                "bound_issuer": s.jwt_issuer,
                "jwt_supported_algs": ["ES256", "ES384"],
            }
            with translated(f"auth/{mount}/config"):
                try:
                    current = self.client.read(f"auth/{mount}/config")
                    current = (current or {}).get("data") or {}
                except hx.InvalidPath:
                    current = {}
                if any(current.get(k) != v for k, v in wanted_config.items()):
                    self.client.write_data(f"auth/{mount}/config", data=wanted_config)
                    self.report.note(f"auth/{mount}/config", True)
                else:
                    self.report.note(f"auth/{mount}/config", False)
                wanted_role = service_role(s, env)
                try:
                    role = (self.client.read(f"auth/{mount}/role/{s.jwt_role}") or {}).get("data")
                except hx.InvalidPath:
                    role = None
                if role is None or any(role.get(k) != v for k, v in wanted_role.items()):
                    self.client.write_data(f"auth/{mount}/role/{s.jwt_role}", data=wanted_role)
                    self.report.note(f"auth/{mount}/role/{s.jwt_role}", True)
                else:
                    self.report.note(f"auth/{mount}/role/{s.jwt_role}", False)


def service_role(settings: Settings, environment: str) -> dict[str, object]:
    """The one role per environment mount. ``user_claim`` is the per-generation
    credential alias (``<service>.<generation>``), so revoking a generation can disable
    exactly the identity entity its tokens map to; ``env`` must match the mount."""
    return {
        "role_type": "jwt",
        "user_claim": "credential",
        "bound_audiences": [settings.jwt_audience],
        "bound_claims": {"env": environment},
        "token_policies": [policy_name("service", environment)],
        "token_ttl": SERVICE_ROLE_TOKEN_TTL,
        "token_max_ttl": 4 * SERVICE_ROLE_TOKEN_TTL,
        # Vault's default leeways are minutes; ours are seconds (NTP-synced hosts).
        "clock_skew_leeway": 30,
        "expiration_leeway": 30,
        "not_before_leeway": 30,
    }
