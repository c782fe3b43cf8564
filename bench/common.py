"""Shared pieces of the benchmarks: result rows, markdown tables, stacks, timing helpers."""

from __future__ import annotations

import argparse

import dataclasses
import http.client
import json
import math
import os
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
VAULT_DEV = REPO / "vault-dev"
for extra in (str(VAULT_DEV), str(REPO)):
    if extra not in sys.path:
        sys.path.insert(0, extra)

import devstack  # noqa: E402

#: the same setting for every contender: Pebble's random nonce rejection off
PEBBLE_ENV = {"PEBBLE_WFE_NONCEREJECT": "0"}


@dataclasses.dataclass
class Row:
    """One line of a result table. ``ratio`` is certlocker relative to the peer, with
    the orientation stated in ``figure`` (e.g. "x faster" or "x of")."""

    figure: str
    certlocker: str
    peer: str = "—"
    ratio: str = "—"
    target: str = "—"
    met: str = "—"


def table(title: str, rows: Sequence[Row], notes: Sequence[str] = ()) -> str:
    lines = [f"### {title}", "",
             "| figure | certlocker | peer | ratio | target | met? |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.figure} | {r.certlocker} | {r.peer} | {r.ratio} | {r.target} "
                     f"| {r.met} |")
    if notes:
        lines.append("")
        lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the processes ``pids`` so far (gone ones count 0)."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def secs(seconds: float) -> str:
    return f"{seconds:.2f} s"


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size of ``pid`` (``VmHWM`` in /proc/<pid>/status), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def http_json(method: str, url: str, body: Any = None, *, token: str | None = None,
              timeout: float = 30.0) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if token:
        headers["X-Vault-Token"] = token
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")


class KeepAlive:
    """HTTP/1.1 with one kept-alive connection per server (``http.client``): per call a
    fraction of the client CPU of ``requests``, so a latency measured through it is the
    server's, as a Go client such as Vault Agent would see it."""

    def __init__(self, timeout: float = 10.0) -> None:
        self._timeout = timeout
        self._conns: dict[str, http.client.HTTPConnection] = {}

    def call(self, method: str, url: str, body: Any = None,
             headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
        """``(status, parsed JSON body or None)``; a connection the server closed while
        idle is opened again once."""
        for attempt in (1, 2):
            try:
                return self.at_once([(method, url, body, headers)])[0]
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def at_once(self, calls: Sequence[tuple[str, str, Any, Mapping[str, str] | None]],
                ) -> list[tuple[int, Any]]:
        """Several calls in flight together, each on its own kept-alive connection and
        without threads: every request is sent, then every answer read, as a client
        that waits for the slowest of them. A connection that fails is dropped."""
        sent = []
        for slot, (method, url, body, headers) in enumerate(calls):
            parts = urllib.parse.urlsplit(url)
            key = f"{parts.netloc}#{slot}"
            conn = self._conns.get(key)
            if conn is None:
                conn = self._conns[key] = http.client.HTTPConnection(
                    parts.netloc, timeout=self._timeout)
            data = json.dumps(body).encode() if body is not None else None
            try:
                conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""),
                             body=data, headers={**(headers or {}), **(
                                 {"Content-Type": "application/json"} if data else {})})
            except OSError:
                self._drop(key)
                raise
            sent.append((key, conn))
        answers = []
        for key, conn in sent:
            try:
                resp = conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException):
                self._drop(key)
                raise
            if resp.getheader("Connection", "").lower() == "close":
                self._drop(key)
            try:
                answers.append((resp.status, json.loads(raw) if raw else None))
            except ValueError:
                answers.append((resp.status, raw.decode(errors="replace")))
        return answers

    def _drop(self, key: str) -> None:
        conn = self._conns.pop(key, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


@contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"certlocker-bench-{prefix}-") as tmp:
        yield Path(tmp)


@contextmanager
def certlocker_stack(state_dir: Path, *, extra_env: Mapping[str, str] | None = None,
                     components: Sequence[str] = devstack.COMPONENTS,
                     ) -> Iterator[devstack.Stack]:
    """The dev stack on free ports (never the lead's 8180/8200/14000), stopped by PID."""
    stack = devstack.Stack(state_dir, devstack.free_ports(), pebble_env=PEBBLE_ENV,
                           extra_env=extra_env)
    stack.up(components)
    try:
        yield stack
    finally:
        stack.down()


def reconciler_settled(stack: devstack.Stack, timeout: float = 60.0) -> None:
    """Wait until the stack's reconciler has started and finished its start-up sweep, so
    its boot (imports, first sweep and tick) does not share the cores with what is
    measured next."""
    log = stack.state_dir / "reconciler.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and "reconcile.sweep_finished" in log.read_text(errors="replace"):
            time.sleep(0.5)  # the tick that follows the sweep
            return
        time.sleep(0.1)
    raise TimeoutError(f"the reconciler did not finish its start-up sweep in {timeout} s")


def proc_named(stack: devstack.Stack, name: str) -> devstack.Proc:
    for proc in stack.procs:
        if proc.name == name:
            return proc
    raise RuntimeError(f"no {name} process in the stack")


#: its sitecustomize logs each Vault request per process (``vault_counter_env``)
COUNTER = BENCH / "vault_counter"


def vault_counter_env(counts: Path) -> dict[str, str]:
    """The environment under which every certlocker process of a stack logs each Vault
    request it sends into ``counts`` (one file per process)."""
    return {"PYTHONPATH": os.pathsep.join(
                filter(None, (str(COUNTER), os.environ.get("PYTHONPATH")))),
            "BENCH_VAULT_COUNT_PORT": "1", "BENCH_VAULT_COUNT_DIR": str(counts)}


def limit_arg(text: str) -> tuple[int, int]:
    """``ORDERS/SECONDS`` on a bench's command line (the drill's ``--limit``)."""
    orders, _, seconds = text.partition("/")
    try:
        return int(orders), int(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError("ORDERS/SECONDS, e.g. 40/60") from None


def machine() -> str:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), Python {sys.version.split()[0]}"
