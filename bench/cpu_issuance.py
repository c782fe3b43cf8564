"""``python -m bench.cpu_issuance [--count] [--runs N]``: CPU per certificate by process.

The ECDSA part of ``bench/run issuance`` (50 certificates declared through the API from
8 clients, then polled until valid; the in-process client after it), with the figures
that survive a shared machine: CPU seconds of the API workers, the reconciler, OpenBao
and Pebble (``/proc/<pid>/stat`` of each process's session, before and after), per
certificate. ``--count`` also turns on an OpenBao file audit device and prints the Vault
requests per certificate by operation and path (the device costs OpenBao CPU: compare
CPU figures between runs of the same kind only).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import time
from pathlib import Path

from .bench_issuance import _certlocker_run, _inprocess_run
from .common import (certlocker_stack, cpu_seconds, proc_named, reconciler_settled,
                     vault_counter_env, workdir)

N = 50
COUNT_DIR = Path("/tmp/vcount-out")


def _shape(path: str) -> str:
    path = re.sub(r"/v1/", "", path)
    path = re.sub(r"bench-ec/c\d+", "<cert>", path)
    path = re.sub(r"audit/events(-\d+)?/\d+", "audit/events<lane>/<seq>", path)
    path = re.sub(r"schedule/[^/]+/[^/]+/", "schedule/<day>/<min>/", path)
    path = re.sub(r"expiry/[^/]+/", "expiry/<day>/", path)
    path = re.sub(r"challenges/.+", "challenges/<token>", path)
    path = re.sub(r"dev\.bench-ec\.c\d+", "<id>", path)
    path = re.sub(r"expiry/<day>/.*", "expiry/<day>/<id>", path)
    path = re.sub(r"names/c\d+\.bench-ec\.bench\.test", "names/<name>", path)
    return path


def _counts(directory: Path, n: int, groups: dict[int, str]) -> str:
    by: collections.Counter[str] = collections.Counter()
    total = 0
    for log in directory.glob("*.log"):
        who = groups.get(int(log.stem), "other")
        for line in log.read_text().splitlines():
            method, _, path = line.partition(" ")
            by[f"{who:10s} {method} {_shape(path)}"] += 1
            total += 1
    lines = [f"vault requests: {total} = {total / n:.2f} per certificate"]
    lines += [f"  {c / n:6.2f}  {k}" for k, c in by.most_common()]
    return "\n".join(lines)


AREAS = (  # first match wins, tested on every frame of a sample's stack
    ("logging", ("logging/", "certlocker/logs.py")),
    ("audit (with its Vault calls)", ("certlocker/audit/", "vault/audit_store.py")),
    ("ACME JWS and crypto", ("josepy/", "acme/jws.py", "cryptography/")),
    ("ACME HTTP", ("certlocker/transport/acme_session.py", "requests/")),
    ("Vault client", ("hvac/", "certlocker/vault/")),
    ("ACME other", ("acme/", "certlocker/issuance/")),
    ("Flask/gunicorn (declare, bench polls, http-01 answers)", ("flask/", "werkzeug/",
                                                                "gunicorn/")),
    ("certlocker other", ("certlocker/",)),
)


def _idle_seconds() -> float:
    """Idle + iowait seconds of all cores so far (``/proc/stat``)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    return (int(fields[3]) + int(fields[4])) / os.sysconf("SC_CLK_TCK")


def breakdown(raw: Path, n: int, cpu_seconds: float) -> str:
    """CPU per certificate by area, from py-spy raw stacks (GIL holders only), scaled to
    the CPU the workers really used (the sampler misses some under load)."""
    areas: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        area = next((name for name, marks in AREAS
                     if any(m in f for f in frames for m in marks)), "other")
        areas[area] += int(count)
    total = sum(areas.values()) or 1
    lines = [f"worker CPU by area ({total} samples):"]
    lines += [f"  {1000 * cpu_seconds * c / total / n:6.1f} ms/cert {100 * c / total:5.1f}%  {a}"
              for a, c in areas.most_common()]
    return "\n".join(lines)


def run(count: bool, peer: bool, settle: bool, profile: Path | None,
        keep_log: Path | None = None) -> None:
    with workdir("cpu") as tmp, certlocker_stack(tmp / "stack") as stack:
        api, token = stack.api_url, stack.operator_token or ""
        if settle:
            reconciler_settled(stack)
        groups = {name: proc_named(stack, name).members()
                  for name in ("api", "reconciler", "openbao", "pebble")}
        if count:
            for f in COUNT_DIR.glob("*.log"):
                f.unlink()
        recorder = None
        if profile:
            import shutil
            import subprocess
            py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            recorder = subprocess.Popen(
                [py_spy, "record", "--pid", str(proc_named(stack, "api").pid),
                 "--subprocesses", "--threads", "--gil", "--format", "raw",
                 "--output", str(profile),
                 "--rate", "250", "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.5)
        before = {k: cpu_seconds(v) for k, v in groups.items()}
        idle_before, own_before = _idle_seconds(), os.times()
        started = time.monotonic()
        wall, declared = _certlocker_run(api, token, "bench-ec", "ec-p256", N)
        after = {k: cpu_seconds(v) for k, v in groups.items()}
        idle, own = _idle_seconds() - idle_before, os.times()
        own_cpu = own.user + own.system - own_before.user - own_before.system
        if recorder is not None:
            import signal
            recorder.send_signal(signal.SIGINT)
            recorder.wait(60)
        print(f"certlocker: {wall:.2f} s wall, declares {declared:.2f} s", flush=True)
        for k in groups:
            print(f"  cpu {k:10s} {after[k] - before[k]:6.2f} s  "
                  f"{1000 * (after[k] - before[k]) / N:6.1f} ms/cert")
        print(f"  cpu {'bench':10s} {own_cpu:6.2f} s  {1000 * own_cpu / N:6.1f} ms/cert "
              "(this process: the declaring and polling client)")
        print(f"  idle cores  {idle:6.2f} s of {wall * (os.cpu_count() or 1):.2f} s")
        t0 = time.time() - (time.monotonic() - started)
        print(f"bench window: {time.strftime('%H:%M:%S', time.gmtime(t0))} +{wall:.1f}s")
        for line in (stack.state_dir / "reconciler.log").read_text().splitlines():
            if "tick" in line or "sweep" in line or "reconcile.certificate" in line:
                print("  reconciler:", line[:200])
        if keep_log is not None:
            import shutil
            shutil.copy(stack.state_dir / "api.log", keep_log)
        if profile:
            print(breakdown(profile, N, after["api"] - before["api"]))
        if count:
            time.sleep(0.5)
            print(_counts(COUNT_DIR, N, {p: k for k, v in groups.items() for p in v}))
        if peer:
            for name in ("reconciler", "api"):
                proc_named(stack, name).stop()
            ip = _inprocess_run(stack.directory_url, str(stack.ca_bundle),
                                stack.ports["api"], "inproc-ec", "ec-p256", N)
            print(f"in-process: {ip:.2f} s; ratio {ip / wall:.2f}x", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_issuance")
    parser.add_argument("--count", action="store_true",
                        help="count Vault requests by kind (OpenBao file audit device)")
    parser.add_argument("--no-peer", action="store_true", help="skip the in-process client")
    parser.add_argument("--settle", action="store_true",
                        help="start once the reconciler has finished its start-up sweep")
    parser.add_argument("--profile", type=Path, help="py-spy raw output of the API workers")
    parser.add_argument("--keep-log", type=Path, help="copy the API's JSON log here")
    args = parser.parse_args(argv)
    if args.count:
        COUNT_DIR.mkdir(exist_ok=True)
        os.environ.update(vault_counter_env(COUNT_DIR))
    run(args.count, not args.no_peer, args.settle, args.profile, args.keep_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
