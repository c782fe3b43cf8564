"""Part 5, the spec watch (issue #14): what one look for specs written straight into
Vault costs, per tick, at N = 1k and 10k specs (100k with ``--full``).

Seeds spec records only (no status, no hints: the watch reads nothing else) into the
stack's OpenBao, then measures with certlocker's own token and policy:

- the watch: ``VaultStore.spec_versions`` (one ``SCAN detailed-metadata/specs/``);
- the fallback for HashiCorp Vault: listing ``specs/``, each environment and each
  service, as ``SpecWatch`` does without SCAN;
- for scale, a keys-only ``SCAN metadata/specs/`` (what finding new specs alone would
  cost; root token, as certlocker's policy does not grant it).

"server CPU" is the OpenBao process's user + system time over the call (from
/proc/<pid>/stat): what the request costs Vault, whoever waits for it.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import sys
import time
import tracemalloc
import urllib.request
from pathlib import Path
from typing import Callable

from certlocker.lifecycle.spec_watch import SpecWatch, WatchOptions
from certlocker.models import CertificateRef, CertificateSpec, KeyType
from certlocker.paths import VaultPaths
from certlocker.vault.store import VaultStore

from .common import (Row, certlocker_stack, median, ms, proc_named, secs, table,
                     workdir)

SIZES = (1_000, 10_000)
FULL_SIZES = (1_000, 10_000, 100_000)
PER_SERVICE = 100
SEED_THREADS = 32
ROUNDS = 5


def _spec(i: int) -> CertificateSpec:
    ref = CertificateRef("dev", f"inv{i // PER_SERVICE:04d}", f"c{i}")
    return CertificateSpec(ref=ref, dns_names=(f"{ref.name}.{ref.service}.bench.test",),
                           issuer="pebble", key_type=KeyType.EC_P256)


def _seed(root: VaultStore, start: int, stop: int) -> float:
    started = time.monotonic()
    with cf.ThreadPoolExecutor(SEED_THREADS) as pool:
        for future in cf.as_completed([pool.submit(root.create_spec, _spec(i))
                                       for i in range(start, stop)]):
            future.result()
    return time.monotonic() - started


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(pid: int, call: Callable[[], object]) -> tuple[float, float, float]:
    """Median wall time, server CPU and client CPU of ``call`` over ``ROUNDS``."""
    walls, servers, clients = [], [], []
    for _ in range(ROUNDS):
        s0, c0, t0 = _cpu(pid), time.process_time(), time.monotonic()
        call()
        walls.append(time.monotonic() - t0)
        clients.append(time.process_time() - c0)
        servers.append(_cpu(pid) - s0)
    return median(walls), median(servers), median(clients)


def _bytes(addr: str, token: str, path: str) -> int:
    req = urllib.request.Request(f"{addr}/v1/{path}?scan=true",
                                 headers={"X-Vault-Token": token})
    with urllib.request.urlopen(req, timeout=300) as resp:
        return len(resp.read())


def _peak_mib(call: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


class _Counting:
    """The store, counting its LIST requests (the fallback's cost in round trips)."""

    def __init__(self, store: VaultStore) -> None:
        self.paths = store.paths
        self._store = store
        self.lists = 0

    def spec_versions(self) -> None:
        return None  # as HashiCorp Vault: no SCAN

    def list(self, logical_dir: str) -> list[str]:
        self.lists += 1
        return self._store.list(logical_dir)


def run(full: bool = False) -> str:
    import datetime as dt

    sizes = FULL_SIZES if full else SIZES
    rows: list[Row] = []
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    with workdir("watch") as tmp, certlocker_stack(tmp / "stack") as stack:
        proc_named(stack, "reconciler").stop()
        bao = proc_named(stack, "openbao").pid
        paths = VaultPaths()
        root = VaultStore.connect(stack.vault_addr, stack.root_token, paths)
        token = stack.certlocker_token_file.read_text().strip()
        own = VaultStore.connect(stack.vault_addr, token, paths, own_token=True)
        seeded = 0
        for n in sizes:
            seed = _seed(root, seeded, n)
            seeded = n
            found = own.spec_versions()
            if found is None or len(found) != n:
                raise RuntimeError(f"the watch saw {None if found is None else len(found)} "
                                   f"specs, not {n}")
            wall, server, client = _measure(bao, own.spec_versions)
            size = _bytes(stack.vault_addr, token, paths.detailed_metadata_path("specs/"))
            peak = _peak_mib(own.spec_versions)
            keys_wall, keys_server, _ = _measure(bao, lambda: root.hvac.adapter.request(
                "GET", f"/v1/{paths.metadata_path('specs/')}", params={"scan": "true"}))
            counting = _Counting(own)
            fallback = SpecWatch(counting, dt.datetime.now(dt.timezone.utc), WatchOptions())
            fb_wall, fb_server, _ = _measure(bao, fallback.poll)
            lists = counting.lists // ROUNDS
            interval = max(WatchOptions().interval, wall / WatchOptions().max_share)
            label = f"{n // 1000}k"
            rows += [
                Row(f"{label}: the watch, one SCAN of detailed-metadata/specs/ (wall / "
                    "OpenBao CPU / certlocker CPU)",
                    f"{ms(wall)} / {ms(server)} / {ms(client)}"),
                Row(f"{label}: its answer / certlocker's peak Python memory parsing it",
                    f"{size / 2**20:.1f} MiB / {peak:.1f} MiB"),
                Row(f"{label}: the watch's interval at its 10% share (configured 20 s)",
                    secs(interval), "—", "—", "≤ 60 s to act", "yes" if interval
                    + wall < 60 else "**no**"),
                Row(f"{label}: keys only, SCAN metadata/specs/ (wall / OpenBao CPU)",
                    f"{ms(keys_wall)} / {ms(keys_server)}"),
                Row(f"{label}: fallback without SCAN (HashiCorp Vault): level-by-level "
                    "listing (requests / wall / OpenBao CPU)",
                    f"{lists} / {ms(fb_wall)} / {ms(fb_server)}"),
                Row(f"{label}: seeding {n - (sizes[sizes.index(n) - 1] if sizes.index(n) else 0)}"
                    f" specs ({SEED_THREADS} threads, root token)", secs(seed), "—", "—",
                    "not a certlocker figure"),
            ]
            if not first:
                first = {"wall": wall, "server": server}
            last = {"wall": wall, "server": server}
            print(f"  {n}: watch {wall:.3f}s server {server:.3f}s client {client:.3f}s "
                  f"{size / 2**20:.1f}MiB peak {peak:.1f}MiB; keys {keys_wall:.3f}s; "
                  f"fallback {lists} lists {fb_wall:.3f}s", file=sys.stderr, flush=True)
    scale = sizes[-1] // sizes[0]
    rows.append(Row(f"growth of the watch's OpenBao CPU per look from {sizes[0] // 1000}k "
                    f"to {sizes[-1] // 1000}k ({scale}x specs)",
                    f"{last['server'] / max(first['server'], 1e-3):.1f}x", "—", "—",
                    "flat (≈1x)", "yes" if last["server"] < 2 * max(first["server"], 0.01)
                    else "**no**"))
    notes = [
        "OpenBao dev server (in-memory storage), certlocker's own token and policy "
        "(`scan` on detailed-metadata/specs/*); median of 5 per figure.",
        "OpenBao has no query for specs changed since a time: the SCAN answers every "
        "spec's metadata, and the server reads each one to build it. The watch keeps "
        "two fields per spec while parsing (`VaultStore.spec_versions`).",
        "The watch waits at least 10x its last look's duration before the next, so its "
        "share of the wall clock (and of one OpenBao core) stays at or under 10%; past "
        "the size where a look takes 4 s, a spec waits longer than 60 s.",
        "Fallback = `SpecWatch` when the server cannot scan: lists specs/, each "
        "environment and each service (100 specs per service here); it finds new "
        "specs only, every 300 s.",
    ]
    return table("Spec watch: one look for specs written straight into Vault", rows, notes)
