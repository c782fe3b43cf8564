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
