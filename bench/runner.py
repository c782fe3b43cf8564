"""``bench/run [issuance|inventory|credentials|verify|watch|acme-server|idle|drill|all]
[--full] [--count N] [--limit ORDERS/SECONDS]``: run
benchmark parts, print one markdown table per part, and keep the output in
``bench/results/<timestamp>.md``."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
import traceback
from typing import Callable

from .common import BENCH, limit_arg, machine

PARTS = ("issuance", "credentials", "verify", "inventory", "watch", "acme-server", "idle",
         "drill")


def _part(name: str, full: bool, count: int | None = None,
          limit: tuple[int, int] | None = None) -> Callable[[], str]:
    if name == "issuance":
        from . import bench_issuance
        return bench_issuance.run
    if name == "credentials":
        from . import bench_credentials
        return bench_credentials.run
    if name == "verify":
        from . import bench_verify
        return bench_verify.run
    if name == "acme-server":
        from . import bench_acme_server
        return bench_acme_server.run
    if name == "idle":
        from . import bench_idle
        return lambda: bench_idle.run(full=full)
    if name == "drill":
        from . import bench_drill
        return lambda: bench_drill.run(count or bench_drill.DEFAULT_COUNT, limit=limit)
    if name == "watch":
        from . import bench_watch
        return lambda: bench_watch.run(full=full)
    from . import bench_inventory
    return lambda: bench_inventory.run(full=full)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    parser.add_argument("part", nargs="?", default="all", choices=(*PARTS, "all"))
    parser.add_argument("--full", action="store_true",
                        help="inventory, watch, idle: also 100k certificates (seeding alone takes "
                             "tens of minutes on 2 cores)")
    parser.add_argument("--count", type=int, default=None,
                        help="drill: how many certificates (default 1000; 100 for a quick "
                             "check)")
    parser.add_argument("--limit", type=limit_arg, default=None, metavar="ORDERS/SECONDS",
                        help="drill: rate limit the issuer below the load, e.g. 40/60")
    args = parser.parse_args(argv)
    parts = PARTS if args.part == "all" else (args.part,)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    header = (f"## certlocker benchmarks, {stamp}\n\nMachine: {machine()}. "
              f"Command: `bench/run {args.part}{' --full' if args.full else ''}"
              f"{f' --count {args.count}' if args.count else ''}"
              f"{f' --limit {args.limit[0]}/{args.limit[1]}' if args.limit else ''}`. "
              "Every ratio compares two figures measured side by side in this run.\n")
    print(header, flush=True)
    out = [header]
    failed = 0
    for name in parts:
        started = time.monotonic()
        try:
            text = _part(name, args.full, args.count, args.limit)()
        except Exception:
            failed += 1
            text = f"### {name}: FAILED\n\n```\n{traceback.format_exc()}```\n"
        text += f"\n_{name}: {time.monotonic() - started:.0f} s_\n"
        print(text, flush=True)
        out.append(text)
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    path = results / f"{stamp}.md"
    path.write_text("\n".join(out))
    print(f"written: {path.relative_to(BENCH.parent)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
