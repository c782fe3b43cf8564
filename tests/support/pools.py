"""Executors for tests that build services by hand, as ``composition.Pools`` does for
certlocker: the services take their pools, they never make one."""

from __future__ import annotations

import concurrent.futures as cf

from certlocker.discovery.service import DiscoveryPools
from certlocker.lifecycle.service import CertificatePools


def threads(workers: int = 8, name: str = "test") -> cf.ThreadPoolExecutor:
    """A pool of up to ``workers`` threads (made as work comes, ended with the test
    process if nothing shuts it down)."""
    return cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)


def certificate_pools(workers: int = 8) -> CertificatePools:
    """What ``composition.build_services`` gives a ``CertificateService`` whose settings
    say ``issuance_workers = workers``."""
    return CertificatePools(issuance=threads(workers, "issuance"),
                            reads=threads(8, "reads"),
                            side=threads(max(4, workers), "side-writes"),
                            wakeups=threads(1, "wakeups"))


def discovery_pools(max_scans: int = 2) -> DiscoveryPools:
    """What ``composition.build_services`` gives a ``DiscoveryService``."""
    return DiscoveryPools(scans=threads(max_scans, "discovery-scan"),
                          handshakes=threads(max_scans * 256, "discovery-probe"),
                          reads=threads(64, "discovery-read"))
