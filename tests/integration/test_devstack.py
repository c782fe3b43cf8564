"""The dev stack's servers start, answer, and stop by PID without leaving anything behind."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import hvac
import pytest
from cryptography import x509

import devstack
from tests.support.stack import CertlockerStack, OpenBao, Pebble

pytestmark = pytest.mark.integration

DEVSTACK = Path(devstack.__file__)


def test_openbao_answers_health_and_kv_with_root_token_only(openbao: OpenBao) -> None:
    status, body = devstack.http_get(openbao.addr + "/v1/sys/health")
    assert status == 200
    assert json.loads(body)["sealed"] is False

    client = openbao.client()
    client.secrets.kv.v2.create_or_update_secret("devstack-check", {"v": "1"},
                                                 mount_point="secret")
    read = client.secrets.kv.v2.read_secret_version("devstack-check", mount_point="secret",
                                                    raise_on_deleted_version=True)
    assert read["data"]["data"] == {"v": "1"}
    with pytest.raises(hvac.exceptions.Forbidden):
        openbao.client(token="not-a-token").secrets.kv.v2.read_secret_version(
            "devstack-check", mount_point="secret", raise_on_deleted_version=True)


def test_openbao_root_token_is_neither_in_ps_nor_in_a_token_helper(openbao: OpenBao) -> None:
    assert openbao.proc.alive()
    assert openbao.root_token not in devstack._cmdline(openbao.proc.pid)
    assert list((openbao.state_dir / "bao-home").iterdir()) == []


def test_pebble_directory_is_served_over_tls_trusted_by_its_bundle(pebble: Pebble) -> None:
    status, body = devstack.http_get(pebble.directory_url, verify=str(pebble.ca_bundle))
    assert status == 200
    directory = json.loads(body)
    assert directory["newOrder"].startswith("https://127.0.0.1:")
    assert directory["meta"]["externalAccountRequired"] is False
    with pytest.raises(urllib.error.URLError) as caught:
        devstack.http_get(pebble.directory_url, verify=True)  # system trust: unknown CA
    assert isinstance(caught.value.reason, ssl.SSLCertVerificationError)


def test_pebble_issuing_root_comes_from_management_api(pebble: Pebble) -> None:
    root = x509.load_pem_x509_certificate(pebble.roots().encode())
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    own_ca = x509.load_pem_x509_certificate(pebble.ca_bundle.read_bytes())
    assert root.subject != own_ca.subject  # the issuing root is not the TLS trust anchor


def test_challtestsrv_resolves_every_name_to_ipv4_loopback_only(pebble: Pebble) -> None:
    assert devstack.dns_query_a("foo.test", pebble.dns_port) == ["127.0.0.1"]
    assert devstack.dns_query_a("api.prod.example.com", pebble.dns_port) == ["127.0.0.1"]
    assert devstack.dns_query_a("foo.test", pebble.dns_port, qtype=28) == []


def test_http01_port_is_reserved_and_free(pebble: Pebble) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", pebble.http01_port))
    config = json.loads(next(pebble.state_dir.glob("pebble-*.json")).read_text())
    assert config["pebble"]["httpPort"] == pebble.http01_port


def test_pebble_with_eab_requires_external_account(tmp_path: Path) -> None:
    from tests.support.stack import running_pebble

    with running_pebble(tmp_path, eab_keys={"kid-1": "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajV"}) as p:
        _, body = devstack.http_get(p.directory_url, verify=str(p.ca_bundle))
        assert json.loads(body)["meta"]["externalAccountRequired"] is True


def _alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if devstack._running(pid)]


def test_down_in_another_process_stops_every_recorded_pid(tmp_path: Path) -> None:
    stack = devstack.Stack(tmp_path, devstack.free_ports())
    stack.up([devstack.OPENBAO, devstack.PEBBLE])
    try:
        records = json.loads(stack.pids_file.read_text())["processes"]
        assert [r["name"] for r in records] == ["openbao", "challtestsrv", "pebble"]
        pids = [r["pid"] for r in records]
        assert _alive(pids) == pids
        with pytest.raises(devstack.DevStackError, match="still running"):
            devstack.Stack(tmp_path, stack.ports).up([devstack.OPENBAO])

        env_file = stack.write_env_file(tmp_path / ".env")
        assert env_file.stat().st_mode & 0o077 == 0
        assert f"export VAULT_ADDR={stack.vault_addr}\n" in env_file.read_text()

        down = [sys.executable, str(DEVSTACK), "down", "--state-dir", str(tmp_path)]
        first = subprocess.run(down, capture_output=True, text=True, timeout=60)
        assert first.returncode == 0, first.stderr
        assert "openbao" in first.stdout and "pebble" in first.stdout
        assert [r["pid"] for r in records if devstack.Proc.from_record(r).is_ours()] == []
        assert not stack.pids_file.exists()
        second = subprocess.run(down, capture_output=True, text=True, timeout=60)
        assert second.returncode == 0, second.stderr
        assert "nothing was running" in second.stdout
    finally:
        stack.down()


def test_failed_up_stops_what_it_had_started(tmp_path: Path) -> None:
    ports = devstack.free_ports()
    with socket.socket() as squatter:  # Pebble cannot bind its port, so up fails at step c
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", ports["pebble"]))
        squatter.listen()
        stack = devstack.Stack(tmp_path, ports)
        with pytest.raises(devstack.StartupError, match="pebble"):
            stack.up([devstack.OPENBAO, devstack.PEBBLE], timeout=15)
    assert stack.running() == []
    assert _session_of_cmd_alive(f"127.0.0.1:{ports['vault']}") == []


def _session_of_cmd_alive(marker: str) -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and marker in devstack._cmdline(int(p.name))
            and devstack._running(int(p.name))]


def test_stop_never_signals_a_pid_that_was_reused(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        # Until its exec completes the child's command line can read empty, which is how
        # an exiting process of ours reads too: build the records once it is `sleep`.
        devstack.wait_until(lambda: "sleep" in devstack._cmdline(sleeper.pid), 5,
                            what="the sleeper's exec")
        real = devstack.Proc("sleeper", sleeper.pid, tmp_path / "log", marker="60")
        reused = devstack.Proc.from_record({**real.record(), "starttime": real.starttime - 1})
        reused.stop(timeout=1)
        assert sleeper.poll() is None
        other_cmd = devstack.Proc.from_record({**real.record(), "marker": "bao server"})
        other_cmd.stop(timeout=1)
        assert sleeper.poll() is None
        devstack.Proc.from_record(real.record()).stop(timeout=30)
        assert sleeper.wait(timeout=30) == -15
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


def test_stop_takes_the_whole_process_group(tmp_path: Path) -> None:
    proc = devstack.Proc.spawn("tree", ["sh", "-c", "sleep 60 & sleep 60 & wait", "tree"],
                               tmp_path / "tree.log", marker="sleep 60 & sleep 60")
    devstack.wait_until(lambda: len(proc.members()) == 3, 5, what="children")
    started = {pid: _start_time(pid) for pid in proc.members()}
    proc.stop(timeout=5)
    proc.stop()  # idempotent
    # Same PID *and* start time: on a busy machine a freed PID can be handed out again.
    survivors = [pid for pid, at in started.items()
                 if devstack._running(pid) and _start_time(pid) == at]
    assert survivors == []


def _start_time(pid: int) -> int | None:
    stat = devstack._proc_stat(pid)
    return stat[3] if stat else None


def test_wait_until_returns_the_value_or_times_out() -> None:
    calls = []
    assert devstack.wait_until(lambda: calls.append(1) or len(calls) >= 3 and "ok",
                               1, 0.01) == "ok"
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="never"):
        devstack.wait_until(lambda: False, 0.3, 0.01, what="never")
    assert 0.3 <= time.monotonic() - started < 1.5


def test_free_ports_are_distinct_and_vault_gets_two_in_a_row() -> None:
    ports = devstack.free_ports()
    assert len(set(ports.values())) == len(ports)
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", ports["vault"]))
        b.bind(("127.0.0.1", ports["vault"] + 1))


def test_port_overrides_come_from_the_environment() -> None:
    assert devstack.default_ports({})["api"] == 8180
    assert devstack.default_ports({"CERTLOCKER_DEV_API_PORT": "9999"})["api"] == 9999
    with pytest.raises(devstack.DevStackError, match="CERTLOCKER_DEV_VAULT_PORT"):
        devstack.default_ports({"CERTLOCKER_DEV_VAULT_PORT": "eighty"})


def test_full_stack_serves_ready_api_with_bootstrapped_tokens(
        certlocker_stack: CertlockerStack) -> None:
    status, body = devstack.http_get(certlocker_stack.api_url + "/readyz")
    assert status == 200, body
    assert certlocker_stack.env["CERTLOCKER_URL"] == certlocker_stack.api_url
    assert certlocker_stack.env["VAULT_TOKEN"] == certlocker_stack.operator_token
    assert certlocker_stack.operator_token != certlocker_stack.root_token
    policies = certlocker_stack.client().auth.token.lookup_self()["data"]["policies"]
    assert "root" not in policies
    service_token = certlocker_stack.stack.certlocker_token_file.read_text().strip()
    assert service_token not in (certlocker_stack.root_token, certlocker_stack.operator_token)
    api = next(p for p in certlocker_stack.stack.procs if p.name == "api")
    assert len(api.members()) >= 3  # gunicorn's master and 2 workers, stopped as one session
