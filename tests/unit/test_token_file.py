"""certlocker's token file, followed when something rotates it (bootstrap replacing the
token, a Vault Agent sink): which contents are taken, and how often the file is looked
at. The real rotation under a running API is in tests/integration/test_own_token.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from certlocker.vault.client import TokenFile


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def rotate(path: Path, text: str) -> None:
    """As a Vault Agent sink does: write a new file, rename it over the old one."""
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
def file(tmp_path: Path) -> Path:
    path = tmp_path / "certlocker.token"
    path.write_text("s.first\n")
    return path


def test_a_rotated_file_is_used_from_the_next_check(file: Path) -> None:
    clock = Clock()
    tokens = TokenFile(str(file), "s.first", clock)
    rotate(file, "s.second\n")
    assert tokens.current() == "s.first"  # looked at once a second, not per request
    clock.now += TokenFile.CHECK_EVERY
    assert tokens.current() == "s.second"
    file.write_text("s.third")  # rewritten in place
    clock.now += TokenFile.CHECK_EVERY
    assert tokens.current() == "s.third"


@pytest.mark.parametrize("content", ["", "\n", "two words", "s.\x00bad"])
def test_an_empty_or_garbled_file_keeps_the_last_token(file: Path, content: str) -> None:
    clock = Clock()
    tokens = TokenFile(str(file), "s.first", clock)
    rotate(file, content)
    clock.now += TokenFile.CHECK_EVERY
    assert tokens.current() == "s.first"
    rotate(file, "s.second")  # the writer finishes: taken at the next check
    clock.now += TokenFile.CHECK_EVERY
    assert tokens.current() == "s.second"


def test_a_missing_file_keeps_the_last_token(file: Path) -> None:
    clock = Clock()
    tokens = TokenFile(str(file), "s.first", clock)
    file.unlink()
    clock.now += TokenFile.CHECK_EVERY
    assert tokens.current() == "s.first"
    file.write_text("s.second")
    clock.now += TokenFile.CHECK_EVERY
    assert tokens.current() == "s.second"


def test_an_unchanged_file_is_not_read_again(file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    tokens = TokenFile(str(file), "s.first", clock)
    reads: list[Path] = []
    original = Path.read_text

    def counting(self: Path, *args: object, **kwargs: object) -> str:
        reads.append(self)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", counting)
    for _ in range(5):
        clock.now += TokenFile.CHECK_EVERY
        assert tokens.current() == "s.first"
    assert reads == []
