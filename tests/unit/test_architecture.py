"""Each outside system has one door: the imports prove it (STYLE.md, "a layout that
shows the architecture"). A new import through the wrong door fails here."""

from __future__ import annotations

import ast
import subprocess
import sys
import functools
import importlib.util
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "backend" / "certlocker"

#: third-party top-level module -> the only subpackages (or modules) allowed to import it
DOORS = {
    "hvac": ("vault",),
    "acme": ("issuance", "acmeserver"),
    "josepy": ("issuance", "acmeserver"),
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


#: library -> the one module allowed to use its private attributes (``obj._name``)
COMPAT = {
    "hvac": "vault/hvac_compat.py",
    "acme": "issuance/acme_compat.py",
    "josepy": "issuance/acme_compat.py",
}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


@functools.cache
def library_private_names(library: str) -> set[str]:
    """Every private name the installed ``library`` defines: functions, methods,
    classes, module and class variables, and ``self._x`` instance attributes."""
    spec = importlib.util.find_spec(library)
    assert spec is not None and spec.origin is not None, f"{library} is not installed"
    names: set[str] = set()
    for path in Path(spec.origin).parent.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        scopes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef))]
        for scope in scopes:
            for stmt in scope.body:
                if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names.add(stmt.name)
                for target in _assigned(stmt):
                    if isinstance(target, ast.Name):
                        names.add(target.id)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
    return {name for name in names if _private(name)}


def _assigned(stmt: ast.stmt) -> list[ast.expr]:
    if isinstance(stmt, ast.Assign):
        return list(stmt.targets)
    if isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
        return [stmt.target]
    return []


def _library_aliases(tree: ast.Module) -> set[str]:
    """Local names bound to a library's module or one of its objects by an import."""
    aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {(a.asname or a.name).split(".")[0] for a in node.names
                        if a.name.split(".")[0] in COMPAT}
        elif (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
              and node.module.split(".")[0] in COMPAT):
            aliases |= {a.asname or a.name for a in node.names}
    return aliases


def _root(node: ast.expr) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def private_library_uses(source: str, where: str, private: set[str]) -> list[str]:
    """``x._name`` in ``source`` where ``_name`` is private to one of the libraries. On
    ``self``/``cls`` it counts only in a class that extends a library class and does
    not define ``_name`` itself: anything else on ``self`` is the module's own."""
    tree = ast.parse(source)
    aliases = _library_aliases(tree)
    found: list[str] = []

    def visit(node: ast.AST, cls: ast.ClassDef | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, child)
                continue
            if isinstance(child, ast.Attribute) and child.attr in private:
                on_self = isinstance(child.value, ast.Name) and child.value.id in ("self",
                                                                                   "cls")
                if not on_self or (cls is not None and _extends_library(cls, aliases)
                                   and child.attr not in _own_names(cls)):
                    found.append(f"{where}:{child.lineno}: {ast.unparse(child)}")
            visit(child, cls)

    visit(tree, None)
    return found


def _extends_library(cls: ast.ClassDef, aliases: set[str]) -> bool:
    return any(_root(base) in aliases for base in cls.bases)


def _own_names(cls: ast.ClassDef) -> set[str]:
    names = {n.name for n in cls.body
             if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    for stmt in cls.body:
        names |= {t.id for t in _assigned(stmt) if isinstance(t, ast.Name)}
    for node in ast.walk(cls):
        if (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name) and node.value.id == "self"):
            names.add(node.attr)
    return names


def test_private_library_attributes_are_used_only_in_the_compat_modules() -> None:
    private = set().union(*(library_private_names(lib) for lib in COMPAT))
    allowed = {PACKAGE / rel for rel in COMPAT.values()}
    offenders = [use for path in modules() if path not in allowed
                 for use in private_library_uses(path.read_text(encoding="utf-8"),
                                                 str(path.relative_to(PACKAGE)), private)]
    assert offenders == [], (
        "private attributes of hvac/acme/josepy outside their compat modules "
        f"({', '.join(sorted(set(COMPAT.values())))}): {offenders}")


def test_the_private_attribute_check_sees_a_use() -> None:
    """The check above is not vacuous: it finds each shape of private use."""
    sample = (
        "from acme.client import ClientNetwork\n"
        "class Net(ClientNetwork):\n"
        "    def post(self, *a, **k):\n"
        "        return self._post_once(*a, **k)\n"
        "def alternates(acme, response):\n"
        "    return acme._get_links(response, 'alternate')\n"
        "class Own:\n"
        "    def __init__(self):\n"
        "        self._kwargs = {}\n"
        "    def get(self):\n"
        "        return self._kwargs\n")
    uses = private_library_uses(sample, "sample.py", library_private_names("acme")
                                | library_private_names("hvac"))
    assert uses == ["sample.py:4: self._post_once", "sample.py:6: acme._get_links"]


# -- layers --------------------------------------------------------------------------------

#: top-level module or package -> its layer; a module imports only its own layer or lower.
#: 0 the domain, 1 what every door shares, 2 the doors to outside systems, 3 the lifecycle
#: and what reports on it, 4 the composition root, 5 the entry points.
LAYERS = {
    **dict.fromkeys(("__init__", "models", "ports", "names", "paths", "clock", "errors", "cas",
                     "specs", "ownership", "renew_before", "x509info", "maintenance"), 0),
    **dict.fromkeys(("audit", "transport", "fanout", "logs"), 1),
    **dict.fromkeys(("vault", "issuance", "credentials", "delivery", "notify", "settings"), 2),
    **dict.fromkeys(("lifecycle", "discovery", "metrics", "acmeserver"), 3),
    "composition": 4,
    **dict.fromkeys(("api", "app", "cli", "reconcile_cmd", "gunicorn_worker"), 5),
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["certlocker", *parts])


def _import_graph() -> dict[str, set[str]]:
    """certlocker module -> the certlocker modules it imports (anywhere in the file,
    function-level imports included: a lazy import is still a dependency)."""
    names = {_module_name(p): p for p in modules()}
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = (package[:len(package) - node.level + 1] if node.level else [])
                module = ".".join(base + ([node.module] if node.module else []))
                targets = [f"{module}.{a.name}" for a in node.names] + [module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:  # the most specific name that is a module
                if target in names and target != name:
                    deps.add(target)
                    break
        graph[name] = deps
    return graph


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_top_level_module_has_a_layer() -> None:
    assert {_top(m) for m in _import_graph()} - set(LAYERS) == set()


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = sorted(f"{m} -> {d}" for m, deps in _import_graph().items() for d in deps
                    if LAYERS[_top(d)] > LAYERS[_top(m)])
    assert upward == []


def _circle(edges: dict[str, set[str]]) -> list[str] | None:
    """A path that comes back to where it started, if the graph has one."""
    seen: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> list[str] | None:
        seen[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if seen.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in seen and (found := visit(nxt, path + [nxt])):
                return found
        seen[node] = 2
        return None

    for start in sorted(edges):
        if start not in seen and (found := visit(start, [start])):
            return found
    return None


def test_no_import_circle_between_modules_or_packages() -> None:
    graph = _import_graph()
    packages: dict[str, set[str]] = {}
    for module, deps in graph.items():
        packages.setdefault(_top(module), set()).update(
            _top(d) for d in deps if _top(d) != _top(module))
    assert _circle(graph) is None
    assert _circle(packages) is None
    assert _circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


#: the executor classes of ``concurrent.futures`` that make threads or processes
POOL_CLASSES = {"ThreadPoolExecutor", "ProcessPoolExecutor"}
#: the one module that makes pools (``composition.Pools``)
POOL_MAKERS = {"composition.py"}


def pool_references(source: str, where: str) -> list[str]:
    """Every mention of a pool class in ``source``: an import of it, a name, or an
    attribute (``cf.ThreadPoolExecutor``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.Attribute):
            names = [node.attr]
        found += [f"{where}:{node.lineno}: {n}" for n in names if n in POOL_CLASSES]
    return found


def test_no_thread_pool_outside_the_composition_root() -> None:
    """Every pool is made by ``composition.Pools`` and handed to what runs on it, so the
    process's threads can be counted, sized and shut down in one place."""
    offenders = [ref for path in modules()
                 if str(path.relative_to(PACKAGE)) not in POOL_MAKERS
                 for ref in pool_references(path.read_text(encoding="utf-8"),
                                            str(path.relative_to(PACKAGE)))]
    assert offenders == []


def test_the_pool_check_sees_a_pool() -> None:
    """The check above is not vacuous: each way of naming a pool class is found."""
    sample = ("import concurrent.futures as cf\n"
              "from concurrent.futures import ProcessPoolExecutor\n"
              "pool = cf.ThreadPoolExecutor(4)\n")
    assert pool_references(sample, "s.py") == ["s.py:2: ProcessPoolExecutor",
                                               "s.py:3: ThreadPoolExecutor"]


def test_the_reconciler_process_does_not_import_flask() -> None:
    code = ("import sys, certlocker.reconcile_cmd, certlocker.composition; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('flask', 'werkzeug') or m.startswith('certlocker.api') "
            "or m == 'certlocker.app'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"


# -- ports (issue #18 item 3) --------------------------------------------------------------

#: what the domain's ports may import of certlocker: the domain itself
DOMAIN_MODULES = {"models", "errors", "paths", "names", "clock", "specs", "ownership"}
#: packages the lifecycle and discovery reach only through ``certlocker.ports``
ADAPTERS = ("vault", "issuance", "credentials", "notify", "metrics", "api", "app", "composition",
            "reconcile_cmd", "cli", "gunicorn_worker")
#: imports of an adapter package that lifecycle/ and discovery/ still need today
KNOWN_ADAPTER_IMPORTS = {
    # the ARI certificate id (RFC 9773): pure X.509 arithmetic kept beside the ACME client
    ("lifecycle/renewal_info.py", "certlocker.issuance.ari"),
    # the inventory walk shared with the metrics summary (a lazy import)
    ("discovery/service.py", "certlocker.metrics.summary"),
}


def certlocker_imports(path: Path, source: str | None = None) -> set[str]:
    """The certlocker modules ``path`` imports, lazy imports too; relative imports are
    resolved, and ``from package import name`` counts as ``package.name`` when that is
    a module."""
    package = list(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "certlocker"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "certlocker":
                module = node.module
            else:
                continue
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                found.add(sub if _is_module(sub) else module)
    return found


def _is_module(name: str) -> bool:
    where = PACKAGE.parent.joinpath(*name.split("."))
    return where.with_suffix(".py").is_file() or (where / "__init__.py").is_file()


def _in(module: str, top: str) -> bool:
    return module == f"certlocker.{top}" or module.startswith(f"certlocker.{top}.")


def test_the_ports_import_only_the_domain() -> None:
    path = PACKAGE / "ports.py"
    allowed = {f"certlocker.{m}" for m in DOMAIN_MODULES}
    outside = sorted(m for m in certlocker_imports(path)
                     if not any(m == a or m.startswith(a + ".") for a in allowed))
    assert outside == []
    third_party = sorted(imported_roots(path) - set(sys.stdlib_module_names) - {"certlocker"})
    assert third_party == []


def test_lifecycle_and_discovery_reach_adapters_only_through_ports() -> None:
    found = {(str(p.relative_to(PACKAGE)), m)
             for folder in ("lifecycle", "discovery")
             for p in sorted((PACKAGE / folder).rglob("*.py"))
             for m in certlocker_imports(p) if any(_in(m, a) for a in ADAPTERS)}
    assert found - KNOWN_ADAPTER_IMPORTS == set()


def test_the_layer_check_sees_an_adapter_import() -> None:
    """The check above is not vacuous: it resolves relative, package and lazy imports."""
    sample = ("from ..vault.store import VaultStore\n"
              "from ..issuance import acme_issuer\n"
              "from .. import ports\n"
              "def later():\n"
              "    from certlocker.credentials import service\n")
    assert certlocker_imports(PACKAGE / "lifecycle" / "sample.py", sample) == {
        "certlocker.vault.store", "certlocker.issuance.acme_issuer", "certlocker.ports",
        "certlocker.credentials.service"}


def test_optional_abilities_are_not_probed_by_attribute_name() -> None:
    """``isinstance`` against a ``runtime_checkable`` port, never
    ``getattr(obj, "name", default)``: a capability has a written contract."""
    probes = [f"{p.relative_to(PACKAGE)}:{node.lineno}"
              for folder in ("lifecycle", "discovery")
              for p in sorted((PACKAGE / folder).rglob("*.py"))
              for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id == "getattr" and len(node.args) == 3]
    assert probes == []


# -- the lifecycle's pure policy -----------------------------------------------------------

POLICY = PACKAGE / "lifecycle" / "policy"
#: what lifecycle/policy may import of certlocker: the domain's values and rules, and
#: its own modules. No ports (nothing to call), no door, no other part of the lifecycle.
POLICY_MAY_IMPORT = {"models", "errors", "clock", "names", "specs", "ownership",
                     "renew_before", "x509info", "maintenance", "lifecycle.policy"}
#: the standard library modules that would mean I/O, threads or the process's state
IMPURE_STDLIB = {"os", "socket", "threading", "concurrent", "subprocess", "time",
                 "pathlib", "io", "shutil", "tempfile", "urllib", "http", "ssl"}


def test_the_lifecycle_policy_is_pure() -> None:
    """lifecycle/policy decides from the facts it is given: it imports nothing of the
    lifecycle's services or records, no port, no door and no library that does I/O."""
    allowed = {f"certlocker.{m}" for m in POLICY_MAY_IMPORT}
    modules_ = sorted(POLICY.rglob("*.py"))
    assert len(modules_) > 5, "lifecycle/policy is where the pure decisions live"
    outside = sorted(f"{p.relative_to(PACKAGE)} -> {m}" for p in modules_
                     for m in certlocker_imports(p)
                     if not any(m == a or m.startswith(a + ".") for a in allowed))
    assert outside == []
    third_party = sorted(f"{p.relative_to(PACKAGE)}: {r}" for p in modules_
                         for r in imported_roots(p) - {"certlocker"}
                         if r not in sys.stdlib_module_names or r in IMPURE_STDLIB)
    assert third_party == []


def test_the_policy_check_sees_an_impure_import() -> None:
    """The check above is not vacuous: a record, a port and a sibling service are seen."""
    sample = ("from ..records.due_index import DueIndex\n"
              "from ...ports import Store\n"
              "from .. import verification\n"
              "from . import backoff\n")
    assert certlocker_imports(POLICY / "sample.py", sample) == {
        "certlocker.lifecycle.records.due_index", "certlocker.ports",
        "certlocker.lifecycle.verification", "certlocker.lifecycle.policy.backoff"}
