"""Part 4, served-certificate verification: 1,000 TLS targets on loopback (4 real nginx
processes, 250 listeners each) checked by ``delivery.verify.verify_targets`` vs a
sequential ``openssl s_client | openssl x509 -fingerprint`` shell loop."""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

from certlocker.delivery.verify import TrustAnchors, verify_targets
from certlocker.models import CertificateInfo, Target
from certlocker.settings import Settings
from tests.support.nginx_pool import MiniCA, NginxPool, free_port
from tests.support.pools import threads

from .common import BENCH, Row, met, secs, table, workdir

#: the handshakes' executor (certlocker's composition root makes its own)
PROBES = threads(64, "verify")

NGINX_PROCESSES = 4
PER_NGINX = 250
LOOP_SAMPLE = 100
TARGET_SPEEDUP = 20.0
TARGET_SECONDS = 10.0


def _pools(tmp: Path, stack: ExitStack, leaf_pem: bytes, key_pem: bytes) -> list[str]:
    """Start the nginx processes; return every ``ip:port`` served."""
    addresses = []
    for n in range(NGINX_PROCESSES):
        ips = tuple(f"127.0.{n + 10}.{i + 1}" for i in range(PER_NGINX))
        port = free_port(ips)
        pool = NginxPool(tmp / f"nginx{n}")
        for ip in ips:
            pool.add(ip, port, leaf_pem, key_pem)
        stack.enter_context(pool)
        addresses += [f"{ip}:{port}" for ip in ips]
    return addresses


def run() -> str:
    defaults = Settings(vault_addr="http://127.0.0.1:1", vault_token="unused")
    parallelism, timeout = defaults.verify_parallelism, float(defaults.verify_timeout_seconds)
    ca = MiniCA("bench")
    leaf = ca.leaf(["verify.bench.test"])
    expected = CertificateInfo(serial=leaf.serial, not_before=leaf.cert.not_valid_before_utc,
                               not_after=leaf.cert.not_valid_after_utc,
                               sha256_fingerprint=leaf.sha256, issuer="bench")
    anchors = TrustAnchors.from_pem(ca.root.pem)
    with workdir("verify") as tmp, ExitStack() as servers:
        addresses = _pools(tmp, servers, ca.fullchain(leaf), leaf.key_pem)
        targets = [Target(a) for a in addresses]
        started = time.monotonic()
        results = verify_targets(expected, (), targets, now=dt.datetime.now(dt.timezone.utc),
                                 timeout=timeout, parallelism=parallelism, anchors=anchors,
                                 pool=PROBES)
        ours = time.monotonic() - started
        bad = [r for r in results if r.status != "ok"]
        if len(results) != len(targets) or bad:
            raise RuntimeError(f"{len(bad)} targets not ok, e.g. {bad[:3]}")
        sample = tmp / "targets.txt"
        sample.write_text("\n".join(addresses[:LOOP_SAMPLE]) + "\n")
        started = time.monotonic()
        loop = subprocess.run(["bash", str(BENCH / "openssl_loop.sh"), str(sample)],
                              capture_output=True, text=True, timeout=600)
        loop_seconds = time.monotonic() - started
        if loop.returncode != 0:
            raise RuntimeError(f"openssl loop failed: {loop.stderr[-1000:]}")
        fingerprints = [line.split("=", 1)[1].replace(":", "").lower()
                        for line in loop.stdout.splitlines() if "=" in line]
        if len(fingerprints) != LOOP_SAMPLE or set(fingerprints) != {leaf.sha256}:
            raise RuntimeError(f"the openssl loop saw {len(fingerprints)} fingerprints")
    extrapolated = loop_seconds * len(addresses) / LOOP_SAMPLE
    speedup = extrapolated / ours
    rows = [
        Row(f"{len(addresses)} targets verified (peer: openssl loop, {LOOP_SAMPLE} "
            f"measured x {len(addresses) // LOOP_SAMPLE})", secs(ours), secs(extrapolated),
            f"{speedup:.0f}x faster", f"≥ {TARGET_SPEEDUP:.0f}x", met(speedup >= TARGET_SPEEDUP)),
        Row(f"all {len(addresses)} in", secs(ours), "—", "—", f"< {TARGET_SECONDS:.0f} s",
            met(ours < TARGET_SECONDS)),
        Row("per target", f"{ours / len(addresses) * 1000:.2f} ms",
            f"{loop_seconds / LOOP_SAMPLE * 1000:.1f} ms"),
    ]
    notes = [f"{NGINX_PROCESSES} nginx processes x {PER_NGINX} TLS listeners (127.0.x.y), "
             "one ECDSA P-256 leaf + intermediate from a throwaway CA.",
             f"certlocker: `verify_targets` with the settings defaults (parallelism "
             f"{parallelism}, timeout {timeout:g} s): TLS handshake, leaf fingerprint, "
             "chain-completeness check against the CA root, per target.",
             f"peer: `bench/openssl_loop.sh`, `openssl s_client | openssl x509 "
             f"-fingerprint -sha256` one target after another, measured on the first "
             f"{LOOP_SAMPLE} targets and extrapolated linearly to {len(addresses)}."]
    return table("Served-certificate verification (loopback)", rows, notes)
