"""Two API and two reconciler replicas over a three-node OpenBao Raft cluster.

Three real ``bao server`` processes with Raft storage on loopback (nodes 2 and 3 join
node 1 through ``retry_join``); each certlocker replica talks to a different node, since
standbys forward to the active node. Pebble validates http-01 on one port: the first API
replica listens there, and the answers the reconcilers write reach it through Vault.
While the reconcilers issue a burst of certificates, a standby is killed with SIGKILL
(Raft keeps its quorum of two), then the active node that API replica 1 and a reconciler
talk to steps down. Nothing is lost, nothing is issued twice, every issuance has exactly
one audit event, and no lease or in-flight journal is left behind.

What makes it hold: every Vault call rides out the election (``vault_retry_seconds``),
a write whose answer was lost is settled by reading back, not applied twice, and a
failed issuance is retried after ``retry_base_seconds`` (2 s here) instead of minutes.
A replica whose own node dies for good holds its leases until they expire; that
takeover is what the kill -9 tests prove on one node.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from tests.support.audit_trail import stored_events
from tests.support.kv import grant_names, live_versions
from tests.support.stack import Stack, devstack, free_port

pytestmark = pytest.mark.integration

MOUNT = "certlocker"
SERVICE = "raft"
COUNT = 40


class Node:
    def __init__(self, state_dir: Path, name: str, leader_api: str) -> None:
        self.name = name
        self.port = free_port()
        self.cluster_port = free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.config = state_dir / f"{name}.hcl"
        (state_dir / name).mkdir()
        self.config.write_text(f"""
storage "raft" {{
  path = "{state_dir / name}"
  node_id = "{name}"
  performance_multiplier = 1
  retry_join {{ leader_api_addr = "{leader_api or self.addr}" }}
}}
listener "tcp" {{
  address = "127.0.0.1:{self.port}"
  cluster_address = "127.0.0.1:{self.cluster_port}"
  tls_disable = true
}}
api_addr = "{self.addr}"
cluster_addr = "https://127.0.0.1:{self.cluster_port}"
disable_mlock = true
""")
        home = state_dir / f"{name}-home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items()
               if k not in ("VAULT_ADDR", "VAULT_TOKEN", "BAO_ADDR", "BAO_TOKEN")}
        env["HOME"] = str(home)
        self.proc = devstack.Proc.spawn(
            f"openbao-{name}", [devstack.find_binary("bao"), "server",
                                f"-config={self.config}"],
            state_dir / f"{name}.log", env=env, marker=f"-config={self.config}")

    def health(self) -> dict[str, Any] | None:
        try:
            return requests.get(f"{self.addr}/v1/sys/health", timeout=5).json()
        except (requests.RequestException, ValueError):
            return None

    def unsealed(self, key: str) -> bool:
        try:
            resp = requests.put(f"{self.addr}/v1/sys/unseal", json={"key": key}, timeout=10)
        except requests.RequestException:
            return False
        return resp.status_code == 200 and not resp.json().get("sealed", True)

    def active(self) -> bool:
        health = self.health()
        return bool(health and health.get("initialized") and not health.get("sealed")
                    and not health.get("standby"))


class Cluster:
    def __init__(self, state_dir: Path) -> None:
        self.nodes: list[Node] = []
        first = Node(state_dir, "node1", "")
        self.nodes.append(first)
        for n in (2, 3):
            self.nodes.append(Node(state_dir, f"node{n}", first.addr))
        self.root_token = ""
        self.unseal_key = ""

    def start(self) -> None:
        first = self.nodes[0]
        devstack.wait_until(lambda: first.health() is not None, 60, interval=0.2,
                            what="node1 to answer")
        resp = requests.put(f"{first.addr}/v1/sys/init", timeout=60,
                            json={"secret_shares": 1, "secret_threshold": 1})
        assert resp.status_code == 200, resp.text
        init = resp.json()
        self.root_token, self.unseal_key = init["root_token"], init["keys_base64"][0]
        devstack.wait_until(lambda: first.unsealed(self.unseal_key), 60, interval=0.5,
                            what="node1 unsealed")
        devstack.wait_until(first.active, 60, interval=0.2, what="node1 active")
        for node in self.nodes[1:]:
            devstack.wait_until(lambda node=node: node.unsealed(self.unseal_key), 120,
                                interval=1.0, what=f"{node.name} joined and unsealed")
        devstack.wait_until(lambda: self.voters() == 3, 180, interval=1.0,
                            what="three Raft voters")

    def voters(self) -> int:
        leader = self.leader()
        if leader is None:
            return 0
        resp = requests.get(f"{leader.addr}/v1/sys/storage/raft/configuration", timeout=10,
                            headers={"X-Vault-Token": self.root_token})
        if resp.status_code != 200:
            return 0
        servers = resp.json()["data"]["config"]["servers"]
        return len([s for s in servers if s.get("voter")])

    def leader(self) -> Node | None:
        for node in self.nodes:
            if node.proc.alive() and node.active():
                return node
        return None

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.proc.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("raft"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, cluster: Cluster) -> Iterator[Stack]:
    """Pebble plus certlocker bootstrapped against the cluster's leader: API replica 1 on
    Pebble's http-01 port (through node1); the stack's own reconciler is stopped."""
    leader = cluster.leader()
    assert leader is cluster.nodes[0]
    ports = devstack.free_ports()
    ports["vault"] = leader.port
    stack = Stack(tmp_path_factory.mktemp("raft-stack"), ports,
                  pebble_env={"PEBBLE_WFE_NONCEREJECT": "0"},
                  extra_env={"CERTLOCKER_VAULT_RETRY_SECONDS": "30",
                             "CERTLOCKER_RETRY_BASE_SECONDS": "2"})
    stack.up([devstack.PEBBLE])
    try:
        stack.root_token = cluster.root_token
        stack._up_certlocker(120)
        for proc in stack.procs:
            if proc.name == "reconciler":
                proc.stop()
        yield stack
    finally:
        stack.down()


def root(cluster: Cluster, node: Node | None = None) -> Any:
    import hvac

    target = node or cluster.leader() or cluster.nodes[0]
    return hvac.Client(url=target.addr, token=cluster.root_token, timeout=30)


def cert_versions(cluster: Cluster, name: str) -> int:
    return live_versions(root(cluster), MOUNT, f"certs/dev/{SERVICE}/{name}")


def state(cluster: Cluster, name: str) -> str | None:
    import hvac.exceptions

    try:
        return root(cluster).secrets.kv.v2.read_secret_version(
            mount_point=MOUNT, path=f"status/dev/{SERVICE}/{name}",
            raise_on_deleted_version=True)["data"]["data"]["state"]
    except (hvac.exceptions.InvalidPath, hvac.exceptions.VaultError, requests.RequestException):
        return None


def inflight(cluster: Cluster) -> list[str]:
    import hvac.exceptions

    try:
        listed = root(cluster).secrets.kv.v2.list_secrets(
            mount_point=MOUNT, path=f"system/inflight/dev/{SERVICE}")
    except hvac.exceptions.InvalidPath:
        return []
    return list(listed["data"]["keys"])


def issued_events(procs: list[devstack.Proc]) -> list[str]:
    entries = [json.loads(line) for proc in procs
               for line in proc.log_path.read_text().splitlines() if line.startswith("{")]
    return [e["certificate"] for e in entries if e.get("event") == "certificate.issued"]


def audited_issues(cluster: Cluster) -> list[str]:
    return [e["subject"] for e in stored_events(root(cluster), MOUNT)
            if e.get("action") == "certificate.issue" and e.get("outcome") == "success"]


def log_events(procs: list[devstack.Proc], name: str) -> list[dict[str, Any]]:
    return [e for proc in procs for line in proc.log_path.read_text().splitlines()
            if line.startswith("{") and (e := json.loads(line)).get("event") == name]


def pebble_issued(stack: Stack) -> int:
    return (stack.state_dir / "pebble.log").read_text().count("Issued certificate serial")


def declare_all(cluster: Cluster, key_type: str) -> None:
    grant_names(root(cluster), MOUNT, "dev", SERVICE, [f"c{i}.{SERVICE}.test"
                                                        for i in range(COUNT)])
    for i in range(COUNT):
        root(cluster).secrets.kv.v2.create_or_update_secret(
            mount_point=MOUNT, path=f"specs/dev/{SERVICE}/c{i}",
            secret={"environment": "dev", "service": SERVICE, "name": f"c{i}",
                    "dns_names": [f"c{i}.{SERVICE}.test"], "issuer": "pebble",
                    "key_type": key_type})


def served_key_types(cluster: Cluster) -> list[str | None]:
    import hvac.exceptions

    def one(i: int) -> str | None:
        try:
            status = root(cluster).secrets.kv.v2.read_secret_version(
                mount_point=MOUNT, path=f"status/dev/{SERVICE}/c{i}",
                raise_on_deleted_version=True)["data"]["data"]
        except (hvac.exceptions.VaultError, requests.RequestException):
            return None
        current = status.get("current") or {}
        return current.get("key_type") if status.get("state") == "valid" else None
    return [one(i) for i in range(COUNT)]


def test_a_lost_node_and_a_step_down_during_bursts_lose_nothing_and_issue_nothing_twice(
        cluster: Cluster, stack: Stack) -> None:
    """First a burst of issuances while a standby is killed, then a burst of
    replacements (every spec's key type changed, so every certificate is reissued over
    the one in service, as a renewal is) while the active node steps down."""
    node1, node2, node3 = cluster.nodes
    before = pebble_issued(stack)
    names = [f"dev.{SERVICE}.c{i}" for i in range(COUNT)]

    def env(node: Node) -> dict[str, str]:
        return {**stack.service_env(), "CERTLOCKER_VAULT_ADDR": node.addr}

    def start_reconcilers(phase: str) -> list[devstack.Proc]:
        return [devstack.Proc.spawn(
            f"reconciler-{node.name}-{phase}",
            [devstack.certlocker_binary(), "reconcile", "--interval", "1"],
            stack.state_dir / f"reconciler-{node.name}-{phase}.log", env=env(node),
            cwd=devstack.REPO, marker="reconcile") for node in (node1, node2)]

    def count(key_type: str) -> int:
        return served_key_types(cluster).count(key_type)

    api2_port = free_port()
    api2 = devstack.spawn_api("api-2", api2_port, stack.state_dir / "api-2.log", env(node2))
    procs = [api2]
    try:
        devstack.wait_http(f"http://127.0.0.1:{api2_port}/readyz", 60, proc=api2)

        # Burst 1: first issuances; lose a standby no replica talks to (quorum of two).
        declare_all(cluster, "ec-p256")
        first = start_reconcilers("issue")
        procs += first
        devstack.wait_until(lambda: count("ec-p256") >= 3, 240, interval=0.2,
                            what="the first issuances")
        assert cluster.leader() is node1
        os.kill(node3.proc.pid, signal.SIGKILL)
        devstack.wait_until(lambda: not node3.proc.alive(), 30, what="node3 to die")
        devstack.wait_until(lambda: count("ec-p256") == COUNT, 240, interval=0.5,
                            what="every certificate issued on two nodes")
        assert all(r.alive() for r in first), [r.log_tail() for r in first]
        for proc in first:
            proc.stop()

        # Burst 2: every certificate replaced; the active node steps down meanwhile.
        declare_all(cluster, "ec-p384")
        second = start_reconcilers("replace")
        procs += second
        devstack.wait_until(lambda: count("ec-p384") >= 3, 240, interval=0.2,
                            what="the first replacements")
        step = requests.put(f"{node1.addr}/v1/sys/step-down", timeout=30,
                            headers={"X-Vault-Token": cluster.root_token})
        assert step.status_code == 204, step.text
        devstack.wait_until(lambda: not node1.active(), 30, interval=0.1,
                            what="node1 to step down")
        devstack.wait_until(cluster.leader, 120, interval=0.2, what="a new active node")
        devstack.wait_until(lambda: count("ec-p384") == COUNT, 240, interval=0.5,
                            what="every certificate replaced")
        assert all(r.alive() for r in second), [r.log_tail() for r in second]
    finally:
        for proc in procs:
            proc.stop()
    assert [cert_versions(cluster, f"c{i}") for i in range(COUNT)] == [2] * COUNT
    assert pebble_issued(stack) - before == 2 * COUNT
    assert sorted(issued_events(first)) == sorted(names)
    assert sorted(issued_events(second)) == sorted(names)
    assert inflight(cluster) == []
    assert sorted(audited_issues(cluster)) == sorted(names * 2)
    assert log_events(procs + list(stack.procs), "audit.record_failed") == []
