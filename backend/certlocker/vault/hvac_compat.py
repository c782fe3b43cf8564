"""Every private attribute of ``hvac`` that certlocker uses, in one place.

An hvac adapter keeps the TLS and timeout settings it was built with only in its private
``_kwargs``, and certlocker needs them to build a second adapter for the same server (a
store acting with an operator's token, a probe of a stored token). The functions here
name that attribute; ``tests/unit/test_hvac_compat.py`` fails with its name when an
upgrade removes or reshapes it, and ``pyproject.toml`` keeps ``hvac`` below its next
major version. The architecture test allows no private ``hvac`` attribute anywhere else.
"""

from __future__ import annotations

from typing import Any

import hvac.adapters

#: the keys of ``Adapter._kwargs`` read below
OPTION_KEYS = ("verify", "timeout")


def missing() -> list[str]:
    """What this module relies on that the installed ``hvac`` lacks, named; empty when
    all is there. Checked on a fresh adapter, since hvac sets the attribute in
    ``Adapter.__init__`` (nothing is sent anywhere)."""
    probe = hvac.adapters.JSONAdapter(base_uri="http://127.0.0.1:8200", verify="/ca.pem",
                                      timeout=7)
    options = getattr(probe, "_kwargs", None)
    where = "hvac.adapters.Adapter._kwargs"
    if not isinstance(options, dict):
        return [f"{where} (a dict of the adapter's requests options)"]
    return [f"{where}[{key!r}]" for key, want in zip(OPTION_KEYS, ("/ca.pem", 7), strict=True)
            if options.get(key) != want]


def _options(adapter: hvac.adapters.Adapter) -> dict[str, Any]:
    options: dict[str, Any] = adapter._kwargs
    return options


def adapter_verify(adapter: hvac.adapters.Adapter) -> bool | str:
    """The ``verify`` the adapter was built with (``Adapter._kwargs["verify"]``): True,
    False or a CA bundle path; True when it has none."""
    verify: bool | str = _options(adapter).get("verify", True)
    return verify


def adapter_timeout(adapter: hvac.adapters.Adapter) -> float:
    """The request timeout the adapter was built with (``Adapter._kwargs["timeout"]``), in
    seconds; 10 when it has none."""
    timeout: float = _options(adapter).get("timeout", 10)
    return timeout
