"""Every shell block README.md and docs/*.md mark with ``<!-- test: run -->`` runs as
written: in order, in one ``sh -e`` session (as an operator pastes them into one
terminal), from a copy of the checkout whose ``vault-dev/.env`` is this test's dev
stack, starting from a PATH that has nothing of certlocker's on it. ``DESTDIR`` is a
temporary root where the docs install into ``/``. The systemd units the blocks install
are then checked with ``systemd-analyze verify`` and enabled with ``systemctl --root``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MARK = re.compile(r"<!-- test: run -->\n```sh\n(.*?)```", re.S)
FRESH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
UNITS = ("certlocker-agent@.service", "certlocker-credential.service",
         "certlocker-credential.timer")


def marked_blocks() -> list[tuple[str, str]]:
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return [(doc.relative_to(REPO).as_posix(), block) for doc in docs
            for block in MARK.findall(doc.read_text())]


def checkout_copy(stack: Any, where: Path) -> Path:
    """The checkout as an operator has it (symlinks to this one), with the stack's .env."""
    where.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in (".git", "vault-dev"):
            (where / entry.name).symlink_to(entry)
    (where / "vault-dev").mkdir()
    for entry in (REPO / "vault-dev").iterdir():
        if entry.name not in (".env", ".state"):
            (where / "vault-dev" / entry.name).symlink_to(entry)
    stack.stack.write_env_file(where / "vault-dev" / ".env")
    return where


def test_the_marked_blocks_are_the_ones_operators_run() -> None:
    found = {doc for doc, _ in marked_blocks()}
    assert {"README.md", "docs/delivery.md"} <= found, found


@pytest.fixture(scope="module")
def ran(certlocker_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the marked blocks; the temporary root they installed into."""
    base = tmp_path_factory.mktemp("docs")
    work, root = checkout_copy(certlocker_stack, base / "checkout"), base / "root"
    root.mkdir()
    script = "\n".join(f"# --- {doc}\n{block}" for doc, block in marked_blocks())
    (base / "commands.sh").write_text(script)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CERTLOCKER_", "VAULT_", "BAO_", "ACME_", "PEBBLE_"))}
    env.update({"PATH": FRESH_PATH, "DESTDIR": str(root), "HOME": str(base)})
    done = subprocess.run(["sh", "-e", "-x", str(base / "commands.sh")], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (f"a documented command failed (exit {done.returncode}):"
                                  f"\n{done.stderr[-4000:]}")
    assert "Traceback" not in done.stderr
    return root


def test_documented_commands_run_as_written(ran: Path) -> None:
    credential = ran / "etc/certlocker/credential.jwt"
    assert credential.read_text().count(".") == 2  # a JWT
    assert credential.stat().st_mode & 0o777 == 0o600
    assert os.access(ran / "usr/local/bin/bao", os.X_OK)
    assert (ran / "usr/local/libexec/certlocker/certlocker-deploy.sh").stat().st_mode & 0o111
    for name in UNITS:
        assert (ran / "etc/systemd/system" / name).is_file(), name


def _unit_paths(text: str, key: str) -> list[str]:
    return [p.lstrip("-") for line in text.splitlines() if line.startswith(f"{key}=")
            for p in line.split("=", 1)[1].split()]


def test_the_agent_unit_lets_the_hook_write_where_the_config_installs(ran: Path) -> None:
    """ProtectSystem=full makes /etc read-only for the agent and its hook: every folder
    the shipped config's hook installs into must be opened with ReadWritePaths=, and
    exist after the documented install (the hook cannot create it under /etc)."""
    unit = (ran / "etc/systemd/system/certlocker-agent@.service").read_text()
    assert "ProtectSystem=full" in unit
    writable = _unit_paths(unit, "ReadWritePaths")
    config = (ran / "etc/certlocker/agent/prod-api-www.hcl").read_text()
    lives = re.findall(r'"(/etc/[^"]+)",\s*\]', config)
    assert lives, "no hook destinations found in the shipped agent config"
    for live in lives:
        folder = str(Path(live).parent)
        assert folder in writable, f"{live}: {folder} is read-only for the hook"
        assert (ran / folder.lstrip("/")).is_dir(), f"the install does not create {folder}"


def test_systemd_verifies_and_enables_the_installed_units(ran: Path,
                                                          tmp_path: Path) -> None:
    analyze, systemctl = shutil.which("systemd-analyze"), shutil.which("systemctl")
    if not analyze or not systemctl:
        pytest.skip("systemd-analyze/systemctl not installed (Debian package systemd)")
    # Binaries are where the units name them, under the temporary root.
    check = tmp_path / "units"
    check.mkdir()
    for name in UNITS:
        text = (ran / "etc/systemd/system" / name).read_text()
        execs = re.findall(r"^ExecStart=(\S+)", text, re.M)
        for exe in execs:
            assert exe.startswith("/usr/local/bin/"), f"{name}: {exe} is not absolute"
            assert os.access(ran / exe.lstrip("/"), os.X_OK), f"{name}: {exe} not installed"
        text = text.replace("=/usr/local/bin/", f"={ran}/usr/local/bin/")
        target = "certlocker-agent@prod-api-www.service" if name.endswith("@.service") \
            else name
        (check / target).write_text(text)
    verified = subprocess.run([analyze, "verify", *sorted(str(p) for p in check.iterdir())],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    problems = [line for line in verified.stderr.splitlines()
                if "certlocker" in line]
    assert verified.returncode == 0 and not problems, verified.stderr

    enabled = subprocess.run([systemctl, f"--root={ran}", "enable",
                              "certlocker-agent@prod-api-www.service",
                              "certlocker-credential.timer"],
                             capture_output=True, text=True, timeout=60)
    assert enabled.returncode == 0, enabled.stderr
    wants = ran / "etc/systemd/system"
    # the links point into the root as / (absolute paths), so only the links are checked
    assert (wants / "multi-user.target.wants/certlocker-agent@prod-api-www.service").is_symlink()
    assert (wants / "timers.target.wants/certlocker-credential.timer").is_symlink()
