"""The pure helpers behind bench/: percentiles, tables, wrk and py-spy output parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.bench_credentials import _wrk_latency
from bench.common import Row, percentile, table
from bench.profile import summarize

WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:1/v1/services/dev/x/credentials
  Latency Distribution
     50%    1.20s
     75%  850.00us
     90%   12.50ms
     99%    2.00s
Requests/sec:      6.12
"""


@pytest.mark.parametrize("values,p,expected", [
    ([1.0], 99, 1.0),
    ([3.0, 1.0, 2.0], 50, 2.0),
    (list(range(1, 101)), 95, 95),
    (list(range(1, 101)), 99, 99),
    (list(range(1, 11)), 99, 10),
])
def test_percentile_is_nearest_rank(values: list[float], p: float, expected: float) -> None:
    assert percentile(values, p) == expected


def test_table_has_one_line_per_row_and_the_notes() -> None:
    text = table("T", [Row("a", "1 s", "2 s", "2x", "≥ 1x", "yes"), Row("b", "3")],
                 ["note one"])
    lines = text.splitlines()
    assert lines[0] == "### T"
    assert "| a | 1 s | 2 s | 2x | ≥ 1x | yes |" in lines
    assert "| b | 3 | — | — | — | — |" in lines
    assert lines[-1] == "- note one"


@pytest.mark.parametrize("label,seconds", [("50%", 1.2), ("75%", 0.00085), ("90%", 0.0125),
                                           ("99%", 2.0)])
def test_wrk_latency_units(label: str, seconds: float) -> None:
    assert _wrk_latency(WRK_OUTPUT, label) == pytest.approx(seconds)


def test_wrk_latency_missing_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        _wrk_latency("no distribution here", "50%")


def test_profile_summary_counts_inclusive_and_deepest(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text("main (x.py:1);mint (certlocker/api/credentials.py:56);"
                   "read (hvac/adapters.py:9) 3\n"
                   "main (x.py:1);mint (certlocker/api/credentials.py:56) 1\n")
    text = summarize(raw)
    assert "4 samples" in text
    assert "100.0%  mint (certlocker/api/credentials.py:56)" in text
    deepest = text.split("deepest interesting frame:")[1]
    assert "75.0%  read (hvac/adapters.py:9)" in deepest
    assert "25.0%  mint (certlocker/api/credentials.py:56)" in deepest


def test_the_drill_counts_a_certificate_only_when_every_node_serves_the_new_one() -> None:
    from bench.bench_drill import _served_ok
    new, old = "ab" * 32, "cd" * 32
    view = {"status": "valid", "current": {"sha256_fingerprint": new},
            "targets": [{"status": "ok", "served_sha256": new},
                        {"status": "ok", "served_sha256": new}]}
    assert _served_ok(view, old)
    assert not _served_ok(view, new)  # still the certificate from before the drill
    lagging = {**view, "targets": [view["targets"][0],
                                   {"status": "mismatch", "served_sha256": old}]}
    assert not _served_ok(lagging, old)
    assert not _served_ok({**view, "targets": []}, old)  # nothing verified is not done
    assert not _served_ok({**view, "status": "renewing"}, old)


def test_the_drill_reads_render_times_from_a_bao_agent_log(tmp_path: Path) -> None:
    from bench.bench_drill import _renders
    log = tmp_path / "agent.log"
    log.write_text(
        '2026-12-06T06:46:21.120Z [INFO]  agent: (runner) rendered "/t/c1.ctmpl" => '
        '"/live/c1.pem"\n'
        '2026-12-06T06:46:21.130Z [DEBUG] agent: (runner) checking template\n'
        '2026-12-06T06:46:22.500Z [INFO]  agent: (runner) rendered "/t/c2.ctmpl" => '
        '"/live/c2.pem"\n')
    found = _renders(log)
    assert [dest for _, dest in found] == ["/live/c1.pem", "/live/c2.pem"]
    assert round(found[1][0] - found[0][0], 3) == 1.38


def test_the_limited_drill_counts_the_most_orders_pebble_logged_in_any_window(
        tmp_path: Path) -> None:
    from bench.bench_drill import _orders_per_window

    log = tmp_path / "pebble.log"
    stamps = ["09:00:00", "09:00:00", "09:00:30", "09:01:00", "09:01:01", "09:02:30"]
    log.write_text("Pebble 2026/12/06 08:59:59 Starting Pebble ACME server\n" + "".join(
        f"Pebble 2026/12/06 {t} POST /order-plz -> calling handler()\n"
        f"Pebble 2026/12/06 {t} GET /dir -> calling handler()\n" for t in stamps))
    # 09:00:00 x2, 09:00:30 and 09:01:00 lie within 60 s (ends included: whole seconds)
    assert _orders_per_window(log, 60) == {"orders": 6, "most_in_window": 4, "window_s": 60}
    assert _orders_per_window(log, 10)["most_in_window"] == 2


@pytest.mark.parametrize("text, parsed", [("40/60", (40, 60)), ("3/10", (3, 10))])
def test_a_limit_is_orders_per_seconds(text: str, parsed: tuple[int, int]) -> None:
    from bench.common import limit_arg

    assert limit_arg(text) == parsed


@pytest.mark.parametrize("text", ["40", "forty/60", "40/"])
def test_a_bad_limit_is_refused(text: str) -> None:
    import argparse

    from bench.common import limit_arg

    with pytest.raises(argparse.ArgumentTypeError):
        limit_arg(text)
