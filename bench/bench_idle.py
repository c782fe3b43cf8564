"""Part 6, the idle fleet (issue #19, "steady cost independent of size"): the Vault
requests per minute and the reconciler's CPU of an inventory where nothing is due, at
N = 1k and 10k (``--full``: also 100k; ``BENCH_IDLE_SIZES=1000,10000,50000`` to choose).

Seeds N valid certificates straight into the stack's OpenBao (spec, status, due hint,
expiry entry: ``bench_inventory._seed``, none due), then, per size, with certlocker's own
token and the reconciler built by ``composition.build_reconciler`` in this process:

- old: the full sweep (``sweep_budget`` 0, the code path before decision 0007), timed
  once over the whole inventory, amortized the way the old loop ran it: 1,000
  certificates per 60 s tick, a sweep starting every hour (or at once, past 60k);
- base: ``Reconciler.run`` with its sweep parked (ticks and the spec watch only);
- new: ``Reconciler.run`` with the rolling sweep at its default budget, from a fresh
  cursor (its pass starts at once, as a first reconciler's would).

Vault requests are counted in this process at urllib3's connection pool (each request
and each retry, by path); the reconciler's CPU is this process's (nothing else runs in
it meanwhile); OpenBao's CPU is read from /proc.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import urllib3.connectionpool

from certlocker import settings as settings_mod
from certlocker.composition import build_reconciler
from certlocker.lifecycle.policy.sweep_budget import Cursor
from certlocker.lifecycle.reconciler import Options, Reconciler
from certlocker.lifecycle.spec_watch import SpecWatch, WatchOptions
from certlocker.vault.store import VaultStore

from .bench_inventory import _seed
from .common import Row, certlocker_stack, proc_named, table, workdir

SIZES = (1_000, 10_000)
FULL_SIZES = (1_000, 10_000, 100_000)
BASE_MINUTES = int(os.environ.get("BENCH_IDLE_BASE_MINUTES", 2))
NEW_MINUTES = int(os.environ.get("BENCH_IDLE_NEW_MINUTES", 3))
TICK = 60.0  # the default reconcile_interval_seconds
OLD_BATCH = 1000  # the old loop's sweep_batch: certificates per tick while sweeping
OLD_PERIOD = 3600.0  # the old reconcile_sweep_seconds


class Counter:
    """Vault requests of this process to ``port``, by kind (see ``kind``)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.counts: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        self._orig: Callable[..., Any] | None = None

    def install(self) -> None:
        orig = self._orig = urllib3.connectionpool.HTTPConnectionPool.urlopen
        counter = self

        def urlopen(pool: Any, method: str, url: str, *args: Any, **kw: Any) -> Any:
            if pool.port == counter.port and "/v1/" in url:
                with counter.lock:
                    counter.counts[kind(method, url)] += 1
            return orig(pool, method, url, *args, **kw)
        urllib3.connectionpool.HTTPConnectionPool.urlopen = urlopen  # type: ignore[method-assign]

    def uninstall(self) -> None:
        if self._orig is not None:
            urllib3.connectionpool.HTTPConnectionPool.urlopen = self._orig  # type: ignore[method-assign]

    def take(self) -> collections.Counter[str]:
        with self.lock:
            taken, self.counts = self.counts, collections.Counter()
        return taken


def kind(method: str, url: str) -> str:
    """``sweep`` (what a visit or the sweep's walk reads), ``scan`` (the spec watch), or
    ``tick`` (the due index, heartbeats, token renewal...)."""
    path = url.split("/v1/", 1)[1].split("?")[0]
    if "scan=true" in url or "detailed-metadata" in path:
        return "scan"
    if any(part in path for part in (
            "/data/specs/", "/data/status/", "/metadata/specs", "system/sweep/",
            "/data/system/leaves/", "/data/system/expiry/", "/data/system/schedule/")):
        return "sweep"  # the tick only lists the due index (metadata/system/schedule/)
    return "tick"


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _reconciler(settings: settings_mod.Settings, own: VaultStore,
                options: Options) -> Reconciler:
    """The reconciler as ``certlocker reconcile`` builds it, with a spec watch that has
    already looked once (the specs seeded just before are not news to it)."""
    watch = SpecWatch(own, dt.datetime.now(dt.timezone.utc), WatchOptions(
        interval=settings.reconcile_watch_seconds,
        fallback_interval=settings.reconcile_watch_fallback_seconds))
    watch.poll()
    reconciler, _keeper = build_reconciler(settings, options, watch=watch)
    return reconciler


def _window(reconciler: Reconciler, counter: Counter, bao: int, minutes: int,
            ) -> dict[str, float]:
    """``minutes`` ticks of the loop, one a minute, the first at once."""
    counter.take()
    cpu0, bao0 = time.process_time(), _cpu(bao)
    reconciler.run(deadline=time.monotonic() + minutes * TICK - 1.0)
    counts = counter.take()
    result = {k: counts[k] / minutes for k in ("sweep", "tick", "scan")}
    result["total"] = sum(counts.values()) / minutes
    result["cpu"] = (time.process_time() - cpu0) / minutes
    result["bao"] = (_cpu(bao) - bao0) / minutes
    return result


def _old_sweep(reconciler: Reconciler, counter: Counter, bao: int) -> dict[str, float]:
    counter.take()
    cpu0, bao0, t0 = time.process_time(), _cpu(bao), time.monotonic()
    reconciler.start_sweep()
    report = reconciler.sweep_step(None)
    wall = time.monotonic() - t0
    counts = counter.take()
    return {"requests": sum(counts.values()), "cpu": time.process_time() - cpu0,
            "bao": _cpu(bao) - bao0, "wall": wall, "handled": report.handled}


def _sizes(full: bool) -> tuple[int, ...]:
    chosen = os.environ.get("BENCH_IDLE_SIZES")
    if chosen:
        return tuple(int(s) for s in chosen.split(","))
    return FULL_SIZES if full else SIZES


def run(full: bool = False) -> str:
    sizes = _sizes(full)
    results: dict[int, dict[str, Any]] = {}
    with workdir("idle") as tmp, certlocker_stack(tmp / "stack") as stack:
        proc_named(stack, "reconciler").stop()  # ours runs in this process
        bao = proc_named(stack, "openbao").pid
        settings = settings_mod.load(environ=stack.service_env())
        paths = settings.paths
        root = VaultStore.connect(stack.vault_addr, stack.root_token, paths)
        own = VaultStore.connect(stack.vault_addr,
                                 stack.certlocker_token_file.read_text().strip(), paths)
        counter = Counter(int(stack.vault_addr.rsplit(":", 1)[1]))
        counter.install()
        budget = settings.reconcile_sweep_budget_per_minute
        seeded = 0
        try:
            for n in sizes:
                seed = _seed(root, seeded, n, set())
                seeded = n
                # old: the full sweep, once, with the code path before 0007
                old_r = _reconciler(settings, own, Options(
                    interval=TICK, jitter=0.0, sweep_budget=0, workers=settings.issuance_workers))
                old = _old_sweep(old_r, counter, bao)
                old_r.close()
                if old["handled"] != n:
                    raise RuntimeError(f"the full sweep handled {old['handled']}, not {n}")
                # base: ticks and the spec watch only (the rolling sweep parked)
                root.write_json(paths.sweep_cursor(), Cursor(next_pass_at=dt.datetime.now(
                    dt.timezone.utc) + dt.timedelta(days=1)).to_json(), cas=None)
                base_r = _reconciler(settings, own, Options(
                    interval=TICK, jitter=0.0, sweep_budget=budget,
                    workers=settings.issuance_workers))
                base_r._sweep_wanted = False  # not a start: the parked pass stays parked
                base = _window(base_r, counter, bao, BASE_MINUTES)
                base_r.close()
                # new: the rolling sweep from a fresh cursor
                root.destroy(paths.sweep_cursor())
                new_r = _reconciler(settings, own, Options(
                    interval=TICK, jitter=0.0, sweep_budget=budget,
                    sweep_interval=settings.reconcile_sweep_seconds,
                    workers=settings.issuance_workers))
                new = _window(new_r, counter, bao, NEW_MINUTES)
                new_r.close()
                cursor = Cursor.from_json(own.read_json(paths.sweep_cursor())[0])
                results[n] = {"seed": seed, "old": old, "base": base, "new": new,
                              "visited": cursor.visited + (cursor.last_pass or 0)}
                print(f"  {n}: seed {seed:.0f}s old {old} base {base} new {new} "
                      f"visited {results[n]['visited']}", file=sys.stderr, flush=True)
        finally:
            counter.uninstall()
    return _table(sizes, results, budget)


def _old_minutes(n: int) -> tuple[float, float]:
    """The old loop: a sweep of ``n`` takes ceil(n/1000) ticks; one starts every hour, or
    as soon as the last ended when it took longer. (sweep minutes, period minutes)."""
    sweeping = -(-n // OLD_BATCH) * TICK / 60
    return sweeping, max(OLD_PERIOD / 60, sweeping)


def _table(sizes: tuple[int, ...], results: dict[int, dict[str, Any]], budget: int) -> str:
    rows: list[Row] = []
    for n in sizes:
        r = results[n]
        old, base, new = r["old"], r["base"], r["new"]
        label = f"{n / 1000:g}k"
        sweeping, period = _old_minutes(n)
        # the new sweep's share of its window, and of an hour (it rests once a pass is
        # done, until the hour since the pass began is over)
        visits_per_min = r["visited"] / NEW_MINUTES
        rest = min(1.0, n / visits_per_min / 60) if visits_per_min else 1.0
        new_peak = (new["total"], new["cpu"], new["bao"])
        new_hour = tuple(b + (x - b) * rest for x, b in zip(
            new_peak, (base["total"], base["cpu"], base["bao"]), strict=True))
        old_peak = (old["requests"] / sweeping + base["total"],
                    old["cpu"] / sweeping + base["cpu"], old["bao"] / sweeping + base["bao"])
        old_hour = (old["requests"] / period + base["total"],
                    old["cpu"] / period + base["cpu"], old["bao"] / period + base["bao"])
        for what, new_v, old_v in (("busiest minute", new_peak, old_peak),
                                   ("hourly average", new_hour, old_hour)):
            rows.append(Row(
                f"{label}, {what}: Vault requests / reconciler CPU s / OpenBao CPU s per min",
                f"{new_v[0]:.0f} / {new_v[1]:.2f} / {new_v[2]:.2f}",
                f"{old_v[0]:.0f} / {old_v[1]:.2f} / {old_v[2]:.2f}",
                f"{old_v[0] / new_v[0]:.1f}x fewer requests"))
        rows += [
            Row(f"{label}: of which ticks + spec watch (requests; watch SCANs; OpenBao "
                "CPU s per min)",
                f"{base['tick'] + base['scan']:.0f}; {base['scan']:.1f}; {base['bao']:.2f}"),
            Row(f"{label}: one full pass (new: rolling, at the budget | old: full sweep)",
                f"{n / visits_per_min / 60:.1f} h" if visits_per_min else "—",
                f"{sweeping:.0f} min of 1,000-certificate ticks ({old['wall']:.0f} s of "
                "sweeping)", "—", "—",
                f"{new['sweep'] * NEW_MINUTES / max(1, r['visited']):.1f} requests per visit"),
            Row(f"{label}: seeding (spec, status, due and expiry entries)",
                f"{r['seed']:.0f} s", "—", "—", "not a certlocker figure"),
        ]
    first, last = results[sizes[0]]["new"], results[sizes[-1]]["new"]
    growth = last["total"] / first["total"]
    rows.append(Row(f"growth of the new busiest minute from {sizes[0] / 1000:g}k to "
                    f"{sizes[-1] / 1000:g}k ({sizes[-1] // sizes[0]}x inventory)",
                    f"{growth:.2f}x", "—", "—", "flat (≈1x)",
                    "yes" if growth < 1.5 else "**no**"))
    notes = [
        "OpenBao dev server (in-memory storage); certlocker's own token and policy; the "
        "reconciler built as `certlocker reconcile` builds it, run in the bench process.",
        f"new = `Reconciler.run` for {NEW_MINUTES} ticks of 60 s (no jitter; spec watch "
        f"every 20 s) from a fresh cursor: the rolling sweep at {budget} requests/min. "
        "Its hourly average counts the rest after a pass that took under an hour (small "
        "inventories), as the old sweep rested.",
        "old = the full sweep (sweep_budget 0: the code before decision 0007) timed "
        "once over the inventory with 8 workers, placed as the old loop ran it: 1,000 "
        "certificates per 60 s tick, a sweep every hour (past 60k, back to back); its "
        "busiest minute is one such tick.",
        "Ticks + spec watch = a window of the same reconciler with its sweep parked; it "
        "is added to the old figures. The spec watch's SCAN is one request, but OpenBao "
        "reads every spec for it: its CPU grows with the inventory until the watch's 10% "
        "share of the wall clock caps it (decision 0006).",
    ]
    return table("Idle fleet: steady Vault load and reconciler CPU", rows, notes)
