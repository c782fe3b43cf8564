"""Part ``acme-server``: certlocker as an ACME server (issue 16) vs Pebble straight.

One dev stack (OpenBao, Pebble, the API under gunicorn, reconciler), loopback only. The
same in-process client (``bench/inprocess_acme.py``, one account, ``WORKERS`` orders in
flight, ECDSA P-256 keys made on the client) obtains ``N`` certificates twice:

- through certlocker: ``<api>/acme/prod/directory`` with an EAB from
  ``POST /v1/services/prod/<service>/acme-accounts`` (operator token), for ``N`` names the
  service is granted (``PUT /v1/grants/prod/<service>``), one name per certificate, so
  ``N`` certificate records, each stored in Vault, audited and in the inventory;
  certlocker validates upstream at Pebble with its own http-01 solver;
- direct: straight at Pebble, answering http-01 itself on the port Pebble validates (the
  API's: the API and the reconciler are stopped, by PID, before this half, as in
  ``bench_issuance``).

Each half starts with ``WORKERS`` untimed certificates (warm-up: connections, imports,
nonce pools). The result is certificates per second of each, their ratio, latency per
certificate (newOrder to PEM chain, excluding the time a name waits for a free worker),
the Vault requests per certificate of certlocker's processes (``bench/vault_counter``),
and CPU per certificate by process.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import datetime as dt
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from .common import (BENCH, Row, certlocker_stack, cpu_seconds, http_json, met, ms, percentile,
                     proc_named, reconciler_settled, table, vault_counter_env, workdir)
from .inprocess_acme import InProcessClient

N = 50
WORKERS = 16  # bench_issuance's in-process client: ThreadPoolExecutor(16)
TARGET = 0.5
ENV = "prod"
SERVICE = "bench-acme"


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


class _Cpu:
    """CPU seconds by process group (and this process: the client) across a block."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.used: dict[str, float] = {}

    def __enter__(self) -> "_Cpu":
        self._before = {k: cpu_seconds(v) for k, v in self.groups.items()}
        self._before["client"] = _own_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.used = {k: cpu_seconds(v) - self._before[k] for k, v in self.groups.items()}
        self.used["client"] = _own_cpu() - self._before["client"]


def _issue(client: InProcessClient, names: list[str]) -> tuple[float, list[float]]:
    """Every name through ``client``'s pool; wall seconds and each certificate's own
    seconds (newOrder to PEM chain)."""

    def one(name: str) -> float:
        started = time.monotonic()
        chain = client.issue(name, "ec-p256")
        if "BEGIN CERTIFICATE" not in chain:
            raise RuntimeError(f"{name}: no certificate in {chain[:200]!r}")
        return time.monotonic() - started

    started = time.monotonic()
    with cf.ThreadPoolExecutor(max_workers=client.workers) as pool:
        latencies = list(pool.map(one, names))
    return time.monotonic() - started, latencies


def _vault_requests(directory: Path) -> collections.Counter[str]:
    by: collections.Counter[str] = collections.Counter()
    for log in directory.glob("*.log"):
        for line in log.read_text().splitlines():
            method, _, path = line.partition(" ")
            by[f"{method} {_shape(path)}"] += 1
    return by


def _shape(path: str) -> str:
    path = re.sub(r"[0-9a-f]{16,}", "<id>", path)
    path = re.sub(rf"{SERVICE}[./]acme-[a-z0-9-]+", f"{SERVICE}/<cert>", path)
    path = re.sub(r"audit/events(-\d+)?/\d+", "audit/events<lane>/<seq>", path)
    path = re.sub(r"/\d{6,}(/|$)", r"/<n>\1", path)
    path = re.sub(r"schedule/[^/]+/[^/]+/.*", "schedule/<day>/<min>/<id>", path)
    path = re.sub(r"expiry/[^/]+/.*", "expiry/<day>/<id>", path)
    path = re.sub(r"challenges/.+", "challenges/<token>", path)
    return path


def _pool_seconds(log: Path, names: list[str]) -> list[float]:
    """certlocker's own ``issuance.finished`` durations (finalize's issuance in its pool:
    lease, checks, the upstream order at Pebble, storage) for the timed names."""
    from certlocker.acmeserver.server import certificate_name

    ids = {f'"{ENV}.{SERVICE}.{certificate_name((name,))}"' for name in names}
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if '"issuance.finished"' in line:
            record = json.loads(line)
            if f'"{record.get("certificate")}"' in ids:
                out.append(float(record["seconds"]))
    return out


def _inventory_check(api: str, token: str, names: list[str]) -> int:
    """How many of ``names`` are in the inventory, valid, with the key held by the
    client (``GET /v1/certificates``)."""
    wanted = set(names)
    found, cursor = 0, None
    while True:
        query = f"environment={ENV}&service={SERVICE}&limit=100" + (
            f"&cursor={cursor}" if cursor else "")
        code, body = http_json("GET", f"{api}/v1/certificates?{query}", token=token)
        if code != 200:
            raise RuntimeError(f"inventory answered {code}: {body}")
        for item in body["items"]:
            if (set(item["dns_names"]) & wanted and item["key_held_by"] == "client"
                    and item["status"] == "valid"):
                found += 1
        cursor = body.get("next_cursor")
        if not cursor:
            return found


def _progress(what: str) -> None:
    print(f"  {what}", file=sys.stderr, flush=True)


def _summary(wall: float, latencies: list[float], n: int) -> dict[str, float]:
    return {"seconds": wall, "per_second": n / wall, "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99)}


def run(n: int = N, workers: int = WORKERS) -> str:
    names = [f"c{i}.{SERVICE}.bench.test" for i in range(n)]
    warm = [f"warm{i}.{SERVICE}.bench.test" for i in range(workers)]
    direct_names = [f"c{i}.direct.bench.test" for i in range(n)]
    direct_warm = [f"warm{i}.direct.bench.test" for i in range(workers)]
    with workdir("acme-server") as tmp:
        counts = tmp / "vault-requests"
        counts.mkdir()
        counter_env = {**vault_counter_env(counts),
                       # as many issuances at once as the client keeps orders in flight
                       "CERTLOCKER_ISSUANCE_WORKERS": str(workers)}
        with certlocker_stack(tmp / "stack", extra_env=counter_env) as stack:
            api, token = stack.api_url, stack.operator_token or ""
            port = stack.ports["api"]
            reconciler_settled(stack)
            groups = {name: proc_named(stack, name).members()
                      for name in ("api", "reconciler", "openbao", "pebble")}
            code, body = http_json("PUT", f"{api}/v1/grants/{ENV}/{SERVICE}",
                                   {"zones": [f"{SERVICE}.bench.test"]}, token=token)
            if code != 200:
                raise RuntimeError(f"granting {SERVICE} its zone answered {code}: {body}")
            code, eab = http_json("POST", f"{api}/v1/services/{ENV}/{SERVICE}/acme-accounts",
                                  token=token)
            if code != 201:
                raise RuntimeError(f"the ACME binding answered {code}: {eab}")
            client = InProcessClient(eab["directory_url"], str(stack.ca_bundle), None,
                                     workers=workers, eab=eab)
            try:
                _issue(client, warm)
                for log in counts.glob("*.log"):
                    log.unlink()
                with _Cpu(groups) as cl_cpu:
                    cl_wall, cl_lat = _issue(client, names)
                time.sleep(0.5)
                vault = _vault_requests(counts)
            finally:
                client.close()
            _progress(f"certlocker: {n} in {cl_wall:.2f} s")
            inside = _pool_seconds(stack.state_dir / "api.log", names)
            inventoried = _inventory_check(api, token, names)
            if inventoried != n:
                raise RuntimeError(f"{inventoried}/{n} certificates valid in the inventory "
                                   "with the key held by the client")
            for name in ("reconciler", "api"):
                proc_named(stack, name).stop()
            groups = {k: v for k, v in groups.items() if k in ("openbao", "pebble")}
            direct = InProcessClient(stack.directory_url, str(stack.ca_bundle), port,
                                     workers=workers)
            try:
                _issue(direct, direct_warm)
                with _Cpu(groups) as ip_cpu:
                    ip_wall, ip_lat = _issue(direct, direct_names)
            finally:
                direct.close()
            _progress(f"direct: {n} in {ip_wall:.2f} s")
    cl, ip = _summary(cl_wall, cl_lat, n), _summary(ip_wall, ip_lat, n)
    ratio = cl["per_second"] / ip["per_second"]
    total_vault = sum(vault.values())
    _write_json({"n": n, "workers": workers, "warmup": workers, "target": TARGET,
                 "certlocker": {**cl, "cpu_seconds": cl_cpu.used, "pool_seconds": inside,
                                "vault_requests": total_vault,
                                "vault_requests_by_kind": dict(vault.most_common())},
                 "direct": {**ip, "cpu_seconds": ip_cpu.used}, "ratio": ratio})
    rows = [
        Row(f"ECDSA P-256: {n} certs, {workers} in flight, certs/s (peer: same client "
            "straight at Pebble)", f"{cl['per_second']:.2f}/s ({cl['seconds']:.2f} s)",
            f"{ip['per_second']:.2f}/s ({ip['seconds']:.2f} s)",
            f"{ratio:.2f}x of direct", f"≥ {TARGET}x", met(ratio >= TARGET)),
        Row("latency per certificate, p50", ms(cl["p50"]), ms(ip["p50"]),
            f"{cl['p50'] / ip['p50']:.2f}x as long"),
        Row("latency per certificate, p99", ms(cl["p99"]), ms(ip["p99"]),
            f"{cl['p99'] / ip['p99']:.2f}x as long"),
        Row("Vault requests per certificate (API + reconciler)", f"{total_vault / n:.1f}",
            "0"),
    ]
    cpu = ", ".join(f"{k} {1000 * v / n:.0f}" for k, v in cl_cpu.used.items())
    cpu_direct = ", ".join(f"{k} {1000 * v / n:.0f}" for k, v in ip_cpu.used.items())
    top = "; ".join(f"{c / n:.1f} {k}" for k, c in vault.most_common(8))
    notes = [
        f"certlocker: the in-process client (`bench/inprocess_acme.py`) at "
        f"`/acme/{ENV}/directory`, one account registered with an EAB from "
        f"`POST /v1/services/{ENV}/{SERVICE}/acme-accounts`; {n} names of the zone granted "
        f"to {SERVICE}, one certificate record each (stored in Vault, audited, in the "
        "inventory: checked after the run, each `valid` with `key_held_by: client`). "
        "Authorizations are valid at once; certlocker validates upstream at Pebble "
        "(http-01 answered by its API). gunicorn 2 workers x 8 threads, issuance_workers "
        f"{workers} (as many as the client keeps in flight), reconciler running.",
        "direct: the same client at Pebble, no EAB, answering http-01 from memory on the "
        "port Pebble validates (after certlocker's API and reconciler were stopped).",
        f"Both: ThreadPoolExecutor({workers}), 50 ms polling, {workers} untimed warm-up "
        "certificates first; latency is one certificate's newOrder to PEM chain. Pebble "
        "with PEBBLE_VA_NOSLEEP=1, PEBBLE_WFE_NONCEREJECT=0.",
        f"CPU ms per certificate, certlocker run: {cpu}; direct run: {cpu_direct} "
        "(client = this benchmark process, both halves).",
        f"Vault requests per certificate by kind (top 8): {top}.",
    ]
    if inside:
        notes.append(f"Of certlocker's latency, its issuance pool (lease to stored, upstream "
                     f"order at Pebble included, from its log): median "
                     f"{ms(percentile(inside, 50))}, p99 {ms(percentile(inside, 99))}, over "
                     f"{len(inside)} issuances.")
    return table("ACME server throughput (certlocker facade vs Pebble direct)", rows, notes)


def _write_json(result: dict[str, Any]) -> None:
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = results / f"acme-server-{stamp}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    _progress(f"written: {path.relative_to(BENCH.parent)}")
