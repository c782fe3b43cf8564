"""Each outside system has one door: the imports prove it (STYLE.md, "a layout that
shows the architecture"). A new import through the wrong door fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "backend" / "certlocker"

#: third-party top-level module -> the only subpackages (or modules) allowed to import it
DOORS = {
    "hvac": ("vault",),
    "acme": ("issuance",),
    "josepy": ("issuance",),
    "jwt": ("credentials",),
    "flask": ("api", "app.py"),
    "werkzeug": ("api",),
    "prometheus_client": ("metrics",),
    "dns": ("issuance",),
    "gunicorn": ("gunicorn_worker.py",),
}
#: the pure domain imports none of the doors' libraries
DOMAIN = ("models.py", "names.py", "paths.py", "clock.py", "errors.py", "lifecycle",
          "audit")


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def place(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0]


@pytest.mark.parametrize("library, doors", sorted(DOORS.items()))
def test_each_library_is_imported_only_through_its_door(library: str, doors: tuple) -> None:
    offenders = [str(p.relative_to(PACKAGE)) for p in modules()
                 if library in imported_roots(p) and place(p) not in doors]
    assert offenders == []


def test_the_domain_imports_no_outside_system() -> None:
    offenders = [f"{p.relative_to(PACKAGE)}: {sorted(imported_roots(p) & set(DOORS))}"
                 for p in modules() if place(p) in DOMAIN and imported_roots(p) & set(DOORS)]
    assert offenders == []
