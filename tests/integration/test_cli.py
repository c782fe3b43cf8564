"""The operator CLI as a subprocess against the real stack: human tables, --json for
scripts, and the exit codes scripts rely on (0 ok, 1 API error, 2 usage, 3 unreachable)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

CERTLOCKER = str(Path(sys.executable).with_name("certlocker"))


def cli(stack: Any, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(stack.env)
    if url:
        env["CERTLOCKER_URL"] = url
    return subprocess.run([CERTLOCKER, *args], env=env, capture_output=True, text=True,
                          timeout=180)


@pytest.fixture(scope="module")
def issued(certlocker_stack: Any) -> dict[str, Any]:
    done = cli(certlocker_stack, "--json", "request", "prod", "cli-web", "www",
               "--dns", "www.cli-web.test")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_list_and_show_print_tables_and_json(certlocker_stack: Any,
                                             issued: dict[str, Any]) -> None:
    assert issued["id"] == "prod.cli-web.www" and issued["status"] == "valid"
    table = cli(certlocker_stack, "list", "--service", "cli-web")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["ID", "STATUS", "EXPIRES"]
    assert [r.split()[:3] for r in rows] == [
        ["prod.cli-web.www", "valid", issued["current"]["not_after"]]]

    as_json = cli(certlocker_stack, "--json", "list", "--service", "cli-web")
    assert as_json.returncode == 0
    assert [c["id"] for c in json.loads(as_json.stdout)["items"]] == ["prod.cli-web.www"]

    shown = cli(certlocker_stack, "show", "prod.cli-web.www")
    assert shown.returncode == 0
    assert f"sha256:      {issued['current']['sha256_fingerprint']}" in shown.stdout
    shown_json = json.loads(cli(certlocker_stack, "--json", "show", "prod.cli-web.www").stdout)
    assert shown_json["current"] == issued["current"]


def test_exit_codes(certlocker_stack: Any, issued: dict[str, Any]) -> None:
    missing = cli(certlocker_stack, "show", "prod.cli-web.nothing")
    assert missing.returncode == 1
    assert "404" in missing.stderr and missing.stdout == ""

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    unreachable = cli(certlocker_stack, "list", url=f"http://127.0.0.1:{port}")
    assert unreachable.returncode == 3
    assert "cannot reach certlocker" in unreachable.stderr

    assert cli(certlocker_stack, "show").returncode == 2
    assert cli(certlocker_stack, "no-such-command").returncode == 2
    assert cli(certlocker_stack, "discovery", "list", "--state", "bogus").returncode == 2


def test_every_lifecycle_command_exists(certlocker_stack: Any) -> None:
    out = cli(certlocker_stack, "--help").stdout
    for command in ("request", "list", "show", "renew", "revoke", "retire", "credentials",
                    "scan", "verify", "audit", "discovery"):
        assert f"  {command} " in out, command


def test_list_follows_every_page(certlocker_stack: Any, issued: dict[str, Any]) -> None:
    """More certificates than one API page (100 by default): every one is listed, page
    after page, and ``--limit`` says that there are more."""
    root = certlocker_stack.client(certlocker_stack.root_token)
    names = [f"n{i:03d}" for i in range(101)]
    for name in names:  # specs written straight into Vault are a supported declaration
        root.secrets.kv.v2.create_or_update_secret(
            path=f"specs/prod/cli-bulk/{name}", mount_point="certlocker", secret={
                "environment": "prod", "service": "cli-bulk", "name": name,
                "dns_names": [f"{name}.cli-bulk.test"], "issuer": issued["issuer"],
                "key_type": "ec-p256"})
    try:
        listed = cli(certlocker_stack, "--json", "list", "--service", "cli-bulk")
        assert listed.returncode == 0, listed.stderr
        assert [c["name"] for c in json.loads(listed.stdout)["items"]] == names

        paged = cli(certlocker_stack, "--json", "list", "--service", "cli-bulk",
                    "--page-size", "40")
        assert paged.returncode == 0, paged.stderr
        assert [c["name"] for c in json.loads(paged.stdout)["items"]] == names

        table = cli(certlocker_stack, "list", "--service", "cli-bulk", "--limit", "50")
        assert table.returncode == 0, table.stderr
        assert len(table.stdout.splitlines()) == 1 + 50
        assert "there are more" in table.stderr
    finally:
        for name in names:
            root.secrets.kv.v2.delete_metadata_and_all_versions(
                path=f"specs/prod/cli-bulk/{name}", mount_point="certlocker")


# --- issue #17: operator conventions --------------------------------------------------


def test_json_is_accepted_after_the_command(certlocker_stack: Any,
                                            issued: dict[str, Any]) -> None:
    listed = cli(certlocker_stack, "list", "--json", "--service", "cli-web")
    assert listed.returncode == 0, listed.stderr
    assert [c["id"] for c in json.loads(listed.stdout)["items"]] == ["prod.cli-web.www"]
    shown = cli(certlocker_stack, "show", "prod.cli-web.www", "--json")
    assert json.loads(shown.stdout)["id"] == "prod.cli-web.www"
    grant = cli(certlocker_stack, "grants", "show", "prod", "cli-web", "--json")
    assert grant.returncode == 0, grant.stderr
    assert "www.cli-web.test" in json.loads(grant.stdout)["dns_names"]


def test_an_unknown_environment_fails_naming_the_valid_ones(certlocker_stack: Any,
                                                           issued: dict[str, Any]) -> None:
    typo = cli(certlocker_stack, "list", "--environment", "prdo")
    assert typo.returncode == 1
    assert typo.stdout == ""
    assert "environment" in typo.stderr and "prod" in typo.stderr.split("prdo")[-1]


def test_wait_timeouts_failures_and_the_wait_command(certlocker_stack: Any) -> None:
    # --wait that runs out before the certificate settles: exit 4, and how to follow it
    hurried = cli(certlocker_stack, "--json", "request", "prod", "cli-wait", "www",
                  "--dns", "www.cli-wait.test", "--wait", "0.001")
    assert hurried.returncode == 4, hurried.stderr
    assert json.loads(hurried.stdout)["status"] in ("pending", "issuing")
    assert "certlocker wait prod.cli-wait.www" in hurried.stderr

    waited = cli(certlocker_stack, "wait", "prod.cli-wait.www", "--timeout", "120",
                 "--interval", "0.5", "--progress")
    assert waited.returncode == 0, waited.stderr
    assert "status:      valid" in waited.stdout
    assert "waiting for prod.cli-wait.www" in waited.stderr  # the progress line

    # a spec written with the Vault CLI that does not parse: wait ends at once, exit 1
    root = certlocker_stack.client(certlocker_stack.root_token)
    root.secrets.kv.v2.create_or_update_secret(
        path="specs/prod/cli-wait/broken", mount_point="certlocker",
        secret={"dns_names": "broken.cli-wait.test"})
    broken = cli(certlocker_stack, "--json", "wait", "prod.cli-wait.broken",
                 "--timeout", "60")
    assert broken.returncode == 1, broken.stderr
    assert json.loads(broken.stdout)["status"] == "invalid"


def test_destructive_commands_need_yes(certlocker_stack: Any) -> None:
    made = cli(certlocker_stack, "request", "prod", "cli-yes", "www", "--dns",
               "www.cli-yes.test")
    assert made.returncode == 0, made.stderr
    for args in (["retire", "prod.cli-yes.www"],
                 ["revoke", "prod.cli-yes.www", "--reason", "superseded"],
                 ["credentials", "revoke", "prod", "cli-yes"]):
        refused = cli(certlocker_stack, *args)  # stdin is not a terminal: nobody to ask
        assert refused.returncode == 2, (args, refused.stderr)
        assert "--yes" in refused.stderr
    still = json.loads(cli(certlocker_stack, "--json", "show", "prod.cli-yes.www").stdout)
    assert still["status"] == "valid" and still["revocation"] is None

    retired = cli(certlocker_stack, "retire", "prod.cli-yes.www", "--yes", "--no-revoke")
    assert retired.returncode == 0, retired.stderr
    gone = json.loads(cli(certlocker_stack, "--json", "show", "prod.cli-yes.www").stdout)
    assert gone["status"] == "retired"


def test_mint_to_a_missing_folder_fails_before_minting(certlocker_stack: Any,
                                                       tmp_path: Path) -> None:
    def mints() -> int:
        listed = cli(certlocker_stack, "--json", "audit", "list", "--action",
                     "credential.mint", "--certificate", "prod/cli-out", "--limit", "1000")
        assert listed.returncode == 0, listed.stderr
        return len(json.loads(listed.stdout)["items"])

    # a first mint, so the service exists and its mints are counted
    first = cli(certlocker_stack, "credentials", "mint", "prod", "cli-out", "--out",
                str(tmp_path / "ok.jwt"))
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "ok.jwt").stat().st_mode & 0o777 == 0o600
    before = mints()
    missing = tmp_path / "missing" / "dir" / "x.jwt"
    failed = cli(certlocker_stack, "credentials", "mint", "prod", "cli-out", "--out",
                 str(missing))
    assert failed.returncode == 2
    assert "Traceback" not in failed.stderr
    assert "does not exist" in failed.stderr and str(missing.parent) in failed.stderr
    assert mints() == before, "nothing may be minted for a file that cannot be written"


def test_targets_from_the_cli_and_verified_ok_on_the_dev_stack(certlocker_stack: Any,
                                                              tmp_path: Path) -> None:
    """Targets set, added and removed from the CLI (PATCH of the spec); the dev stack
    trusts Pebble's root, so a node serving the issued chain is ok; a node serving
    something else is reported with its reason."""
    from tests.support.tls_servers import issue_test_chain, start_nginx
    from certlocker.delivery.formats import Bundle, haproxy_pem

    cid = "prod.cli-tgt.www"
    made = cli(certlocker_stack, "request", "prod", "cli-tgt", "www", "--dns",
               "www.cli-tgt.test")
    assert made.returncode == 0, made.stderr
    bare = cli(certlocker_stack, "verify", cid)
    assert bare.returncode == 1
    assert "no targets" in bare.stderr

    jwt_file, live = tmp_path / "svc.jwt", tmp_path / "live.pem"
    assert cli(certlocker_stack, "credentials", "mint", "prod", "cli-tgt", "--out",
               str(jwt_file)).returncode == 0
    fetched = cli(certlocker_stack, "fetch", cid, "--format", "haproxy",
                  "--credential-file", str(jwt_file), "--out", str(live))
    assert fetched.returncode == 0, fetched.stderr
    other = issue_test_chain()
    stranger = tmp_path / "stranger.pem"
    stranger.write_text(haproxy_pem(Bundle(other.certificate, other.chain,
                                           other.private_key)))
    good = start_nginx(tmp_path / "good", live)
    bad = start_nginx(tmp_path / "bad", stranger)
    try:
        good_addr, bad_addr = f"127.0.0.1:{good.port}", f"127.0.0.1:{bad.port}"
        set_ = cli(certlocker_stack, "--json", "targets", "set", cid, good_addr,
                   "--sni", "www.cli-tgt.test")
        assert set_.returncode == 0, set_.stderr
        assert [t["address"] for t in json.loads(set_.stdout)["targets"]] == [good_addr]

        ok = cli(certlocker_stack, "verify", cid)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        row = next(r for r in ok.stdout.splitlines() if r.startswith(good_addr))
        assert row.split()[2] == "ok", row

        added = cli(certlocker_stack, "targets", "add", cid, bad_addr)
        assert added.returncode == 0, added.stderr
        mixed = cli(certlocker_stack, "verify", cid)
        assert mixed.returncode == 1
        row = next(r for r in mixed.stdout.splitlines() if r.startswith(bad_addr))
        assert row.split()[2] == "mismatch", row
        assert len(row.split()) > 4, f"no reason shown: {row}"

        unknown = cli(certlocker_stack, "targets", "remove", cid, "127.0.0.1:1")
        assert unknown.returncode == 2 and good_addr in unknown.stderr
        removed = cli(certlocker_stack, "--json", "targets", "remove", cid, bad_addr)
        assert removed.returncode == 0, removed.stderr
        assert cli(certlocker_stack, "verify", cid).returncode == 0
        shown = cli(certlocker_stack, "targets", "show", cid)
        assert good_addr in shown.stdout and bad_addr not in shown.stdout
    finally:
        good.stop()
        bad.stop()


def test_patch_is_validated_like_a_declaration_and_audited(certlocker_stack: Any,
                                                          issued: dict[str, Any]) -> None:
    import requests

    url = f"{certlocker_stack.api_url}/v1/certificates/prod.cli-web.www"
    headers = {"X-Vault-Token": certlocker_stack.operator_token,
               "Content-Type": "application/merge-patch+json"}
    for body, field in (({"targets": ["no-port"]}, "targets/0/address"),
                        ({"environment": "dev"}, "environment"),
                        ({"dns_names": None}, "dns_names"),
                        ({"color": "blue"}, "color")):
        bad = requests.patch(url, json=body, headers=headers, timeout=30)
        assert bad.status_code == 400, (body, bad.text)
        assert bad.headers["Content-Type"].startswith("application/problem+json")
        assert field in bad.json()["detail"]
    missing = requests.patch(url.replace("www", "nothing"), json={"owner": "x"},
                             headers=headers, timeout=30)
    assert missing.status_code == 404
    denied = requests.patch(url, json={"owner": "x"}, timeout=30,
                            headers={**headers, "X-Vault-Token": "not-a-token"})
    assert denied.status_code in (401, 403)

    changed = requests.patch(url, json={"owner": "team-web"}, headers=headers, timeout=30)
    assert changed.status_code == 200, changed.text
    assert changed.json()["owner"] == "team-web"
    events = cli(certlocker_stack, "--json", "audit", "list", "--certificate",
                 "prod.cli-web.www", "--action", "spec.update")
    assert events.returncode == 0, events.stderr
    assert any(e["outcome"] == "success" for e in json.loads(events.stdout)["items"])
