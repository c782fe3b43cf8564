"""certlocker reads one private attribute of hvac, ``Adapter._kwargs``, and only in
``certlocker/vault/hvac_compat.py``. These tests fail, naming it, when an hvac upgrade
removes or reshapes it: update that module (and the pin in pyproject.toml) then."""

from __future__ import annotations

from importlib.metadata import version

import hvac.adapters
import pytest

from certlocker.vault import hvac_compat
from certlocker.vault.client import RetryingAdapter


def test_the_installed_hvac_has_what_certlocker_reads_privately() -> None:
    gone = hvac_compat.missing()
    assert gone == [], (
        f"hvac {version('hvac')} no longer has {', '.join(gone)}, which certlocker reads "
        "in certlocker/vault/hvac_compat.py: adapt that module to this hvac")


def test_an_adapters_trust_and_timeout_are_read_back() -> None:
    adapter = RetryingAdapter(base_uri="http://127.0.0.1:8200", verify="/etc/ca.pem",
                              timeout=3, retry_seconds=0.0)
    assert hvac_compat.adapter_verify(adapter) == "/etc/ca.pem"
    assert hvac_compat.adapter_timeout(adapter) == 3
    plain = hvac.adapters.JSONAdapter(base_uri="http://127.0.0.1:8200", verify=False)
    assert hvac_compat.adapter_verify(plain) is False


def test_an_hvac_without_the_attribute_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself: an adapter that no longer keeps ``_kwargs`` is reported."""
    built = hvac.adapters.Adapter.__init__

    def without_kwargs(self: hvac.adapters.Adapter, *args: object, **kwargs: object) -> None:
        built(self, *args, **kwargs)
        del self._kwargs

    monkeypatch.setattr(hvac.adapters.Adapter, "__init__", without_kwargs)
    assert hvac_compat.missing() == [
        "hvac.adapters.Adapter._kwargs (a dict of the adapter's requests options)"]
