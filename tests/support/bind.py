"""A real BIND 9 (``named``) for dns-01 and CAA tests, on a free loopback port.

``running_bind(state_dir, records)`` writes a TSIG key (``tsig-keygen``), a dynamic zone
``example.test`` that accepts updates signed with it, and an empty static zone ``test``
(so a CAA walk up the tree ends in an authoritative answer rather than REFUSED), starts
``named -g`` in the foreground and stops it by PID on exit.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from devstack import Proc, StartupError, find_binary, free_port, wait_until

ZONE = "example.test"
KEY_NAME = "certlocker-test-key"
ALGORITHM = "hmac-sha256"


@dataclasses.dataclass(frozen=True)
class Bind:
    port: int
    zone: str
    key_name: str
    algorithm: str
    secret: str = dataclasses.field(repr=False)
    proc: Proc
    state_dir: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def dns_options(self) -> dict[str, object]:
        """An issuer's ``dns`` settings for this server (no secret: that is in Vault)."""
        return {"provider": "rfc2136", "server": "127.0.0.1", "port": self.port,
                "zone": self.zone, "key_name": self.key_name, "algorithm": self.algorithm}


def _zone_file(origin: str, records: Iterable[str]) -> str:
    return "\n".join([
        f"$ORIGIN {origin}.", "$TTL 60",
        "@ IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60",
        "@ IN NS ns.test.",
        *(["ns IN A 127.0.0.1"] if origin == "test" else []),
        *records, ""])


@contextmanager
def running_bind(state_dir: Path, records: Iterable[str] = ()) -> Iterator[Bind]:
    """Start ``named`` with zone ``example.test`` holding ``records`` (zone-file lines
    relative to the origin, e.g. ``'deny IN CAA 0 issue "other.test"'``)."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    key_text = subprocess.run([find_binary("tsig-keygen"), "-a", ALGORITHM, KEY_NAME],
                              capture_output=True, text=True, check=True, timeout=30).stdout
    match = re.search(r'secret\s+"([^"]+)"', key_text)
    if not match:
        raise StartupError("tsig-keygen printed no secret")
    key_file = state_dir / "tsig.key"
    key_file.write_text(key_text)
    key_file.chmod(0o600)
    (state_dir / f"{ZONE}.zone").write_text(_zone_file(ZONE, records))
    (state_dir / "test.zone").write_text(_zone_file("test", ()))
    port = free_port()
    conf = state_dir / "named.conf"
    conf.write_text(f"""
options {{
    directory "{state_dir}";
    pid-file "{state_dir}/named.pid";
    session-keyfile "{state_dir}/session.key";
    managed-keys-directory "{state_dir}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    allow-query {{ any; }};
    dnssec-validation no;
    notify no;
}};
controls {{ }};
include "{key_file}";
zone "{ZONE}" {{
    type primary;
    file "{state_dir}/{ZONE}.zone";
    allow-update {{ key "{KEY_NAME}"; }};
}};
zone "test" {{ type primary; file "{state_dir}/test.zone"; }};
""")
    proc = Proc.spawn("named", [find_binary("named"), "-g", "-4", "-c", str(conf)],
                      state_dir / "named.log", marker=str(conf))
    try:
        import dns.message
        import dns.query
        import dns.rdatatype

        def answers() -> bool:
            if not proc.alive():
                raise StartupError(f"named exited{proc.log_tail()}")
            try:
                reply = dns.query.udp(dns.message.make_query(ZONE, dns.rdatatype.SOA),
                                      "127.0.0.1", port=port, timeout=0.5)
            except (OSError, dns.exception.Timeout):
                return False
            return bool(reply.answer)

        wait_until(answers, 30, what="named")
        yield Bind(port=port, zone=ZONE, key_name=KEY_NAME, algorithm=ALGORITHM,
                   secret=match.group(1), proc=proc, state_dir=state_dir)
    finally:
        proc.stop()
