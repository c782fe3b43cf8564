"""``python -m bench.profile mint|issuance``: where the API workers spend their time.

Starts a stack, attaches ``py-spy record`` (raw collapsed stacks, ``--subprocesses``) to
gunicorn while a load runs, and prints the functions with the most samples: inclusive
("in the stack") and exclusive ("on top"), restricted to frames of certlocker, hvac,
requests, acme and jwt so the answer names code, not the interpreter.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .common import certlocker_stack, http_json, proc_named, workdir

INTERESTING = ("certlocker", "hvac", "requests", "urllib3", "acme", "josepy", "jwt",
               "cryptography", "ssl", "socket", "logging", "json")


def _load_mint(api: str, token: str, seconds: float) -> int:
    code, _ = http_json("POST", f"{api}/v1/services/dev/prof/credentials", token=token)
    count, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        code, body = http_json("POST", f"{api}/v1/services/dev/prof/credentials", token=token)
        if code != 201:
            raise RuntimeError(f"mint answered {code}: {body}")
        count += 1
    return count


def _load_issuance(api: str, token: str, n: int = 30) -> int:
    for i in range(n):
        http_json("POST", f"{api}/v1/certificates", {
            "environment": "dev", "service": "prof", "name": f"c{i}",
            "dns_names": [f"c{i}.prof.bench.test"]}, token=token)
    pending = [f"dev.prof.c{i}" for i in range(n)]
    while pending:
        _, body = http_json("GET", f"{api}/v1/certificates/{pending[0]}", token=token)
        if body["status"] in ("valid", "failed"):
            pending.pop(0)
        else:
            time.sleep(0.1)
    return n


def _load_acme(api: str, token: str, ca_bundle: str, n: int = 60) -> int:
    """``n`` certificates through the ACME server (the in-process client, 16 in flight)."""
    from .inprocess_acme import InProcessClient

    http_json("PUT", f"{api}/v1/grants/dev/prof", {"zones": ["prof.bench.test"]},
              token=token)
    _, eab = http_json("POST", f"{api}/v1/services/dev/prof/acme-accounts", token=token)
    client = InProcessClient(eab["directory_url"], ca_bundle, None, workers=16, eab=eab)
    try:
        client.issue_all([f"a{i}.prof.bench.test" for i in range(n)])
    finally:
        client.close()
    return n


def summarize(raw: Path, top: int = 25) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    exclusive: collections.Counter[str] = collections.Counter()
    on_top: collections.Counter[str] = collections.Counter()  # any frame, unfiltered
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        on_top[stack.split(";")[-1]] += count
        frames = [f for f in stack.split(";") if any(k in f for k in INTERESTING)]
        for frame in set(frames):
            inclusive[frame] += count
        if frames:
            exclusive[frames[-1]] += count
    out = [f"{total} samples of the gunicorn processes' threads", "",
           "inclusive:"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in inclusive.most_common(top)]
    out += ["", "deepest interesting frame:"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in exclusive.most_common(top)]
    out += ["", "on top (any frame):"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in on_top.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("load", choices=("mint", "issuance", "acme"))
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="how long py-spy records (mint: also how long the load runs)")
    parser.add_argument("--idle", action="store_true",
                        help="also sample threads waiting on I/O (wall time, not CPU)")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with workdir("profile") as tmp, certlocker_stack(tmp / "stack") as stack:
        api, token = stack.api_url, stack.operator_token or ""
        raw = tmp / "profile.txt"
        recorder = subprocess.Popen(
            [py_spy, "record", "--pid", str(proc_named(stack, "api").pid), "--subprocesses",
             *(["--idle"] if args.idle else []), "--format", "raw", "--output", str(raw),
             "--rate", "200",
             "--duration", str(int(args.seconds))],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.0)  # py-spy attaches
        started = time.monotonic()
        done = (_load_mint(api, token, args.seconds) if args.load == "mint"
                else _load_acme(api, token, str(stack.ca_bundle)) if args.load == "acme"
                else _load_issuance(api, token))
        elapsed = time.monotonic() - started
        output, _ = recorder.communicate(timeout=120)
        if not raw.exists():
            raise RuntimeError(f"py-spy wrote nothing: {output}")
        print(f"{args.load}: {done} in {elapsed:.1f} s")
        print(summarize(raw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
