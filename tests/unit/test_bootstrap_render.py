"""The certlocker policy as bootstrap renders it for a server without ``scan``."""

from __future__ import annotations

from pathlib import Path

from certlocker.vault.bootstrap import without_scan

POLICY = (Path(__file__).resolve().parents[2] / "policies" / "certlocker.hcl").read_text()


def test_only_the_scan_stanza_goes_for_a_server_that_cannot_scan() -> None:
    stripped = without_scan(POLICY)
    assert '"scan"' in POLICY and '"scan"' not in stripped
    assert "detailed-metadata/specs" not in stripped
    # every other stanza is still there, unchanged
    assert stripped.count("path ") == POLICY.count("path ") - 1
    assert without_scan(stripped) == stripped
