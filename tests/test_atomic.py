"""Atomic writes: outputs get ordinary file permissions, not mkstemp's owner-only 0o600."""

from __future__ import annotations

import stat

import pytest

from igkd.artifacts.atomic import atomic_write_text


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_file_gets_the_same_permissions_as_a_plain_open(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    if _mode(plain) == 0o600:
        pytest.skip("this process's umask (077) gives plain files mkstemp's mode too: nothing to tell apart")
    atomic_write_text(tmp_path / "atomic.txt", "x")
    assert _mode(tmp_path / "atomic.txt") == _mode(plain)


def test_replaced_file_keeps_its_permissions(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("old")
    target.chmod(0o640)
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and _mode(target) == 0o640
