"""A node that served an older certificate is probed again before it is called stale: a
node mid-reload has moved on by then, a node that never reloaded (or a pool behind one
address where some members did not) keeps answering with the older one. The TLS
handshake itself is replaced by a script here; tests/integration/test_verify_targets.py
reloads a real nginx."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from typing import Iterator

import pytest

from certlocker.delivery import verify
from certlocker.delivery.verify import Served
from certlocker.models import CertificateInfo, Target
from tests.support.pools import threads

#: the handshakes' executor (certlocker's composition root makes its own)
PROBES = threads(64, "verify")

NOW = dt.datetime(2030, 6, 1, tzinfo=dt.timezone.utc)
CURRENT, OLD = "aa" * 32, "bb" * 32
EXPECTED = CertificateInfo(serial="1f", not_before=NOW - dt.timedelta(days=1),
                           not_after=NOW + dt.timedelta(days=80),
                           sha256_fingerprint=CURRENT, issuer="test")


def served(fp: str) -> Served:
    return Served(sha256=fp, serial="99" if fp == OLD else "1f",
                  not_before=NOW - dt.timedelta(days=60), not_after=NOW + dt.timedelta(days=30),
                  chain=(b"leaf",))


@dataclasses.dataclass
class Script:
    answers: Iterator[str]
    calls: int = 0

    def __call__(self, *args: object) -> Served:
        self.calls += 1
        return served(next(self.answers))


def run(monkeypatch: pytest.MonkeyPatch, answers: list[str], **kw: object
        ) -> tuple[verify.TargetStatus, int]:
    script = Script(itertools.chain(answers, itertools.repeat(answers[-1])))
    monkeypatch.setattr(verify, "probe", script)
    [result] = verify.verify_targets(EXPECTED, {OLD}, [Target("web.test:443")], now=NOW,
                                     recheck_pause=0.0, **kw, pool=PROBES)  # type: ignore[arg-type]
    return result, script.calls


def test_a_node_mid_reload_is_reported_by_what_it_serves_now(
        monkeypatch: pytest.MonkeyPatch) -> None:
    result, calls = run(monkeypatch, [OLD, CURRENT, CURRENT, CURRENT])
    assert (result.status, calls) == ("ok", 4)
    assert result.served_sha256 == CURRENT


def test_a_node_that_never_reloaded_stays_stale_and_says_how_often(
        monkeypatch: pytest.MonkeyPatch) -> None:
    result, calls = run(monkeypatch, [OLD])
    assert (result.status, calls) == ("stale", 4)
    assert result.detail is not None and result.detail.endswith("on 4 of 4 handshakes")


def test_a_pool_serving_both_stays_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    """One address, two members behind it, one not reloaded: some handshakes meet it."""
    result, _ = run(monkeypatch, [OLD, CURRENT, OLD, CURRENT])
    assert result.status == "stale"
    assert result.detail is not None and result.detail.endswith("on 2 of 4 handshakes")


def test_an_ok_node_is_probed_once_and_rechecks_can_be_turned_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(monkeypatch, [CURRENT])[1] == 1
    result, calls = run(monkeypatch, [OLD, CURRENT], rechecks=0)
    assert (result.status, calls) == ("stale", 1)
