"""The two all-or-nothing writers every output goes through (trellis_ext.atomic)."""
import os
import stat

import pytest

from trellis_ext.atomic import atomic_directory, atomic_file


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_atomic_file_replaces_and_follows_umask(tmp_path, umask_022):
    target = tmp_path / "a.json"
    target.write_text("old")
    with atomic_file(target, "w") as f:
        f.write("new")
        assert target.read_text() == "old"  # nothing visible before the rename
    assert target.read_text() == "new"
    assert _mode(target) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["a.json"]


def test_atomic_file_failure_keeps_old_content_and_leaves_nothing(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"keep")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as f:
            f.write(b"half")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"keep"
    assert sorted(os.listdir(tmp_path)) == ["a.bin"]


def test_atomic_file_rejects_other_modes(tmp_path):
    with pytest.raises(ValueError):
        with atomic_file(tmp_path / "x", "a"):
            pass


def test_atomic_directory_follows_umask_and_cleans_up(tmp_path, umask_022):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        with open(os.path.join(tmp, "f.txt"), "w") as f:
            f.write("x")
    assert _mode(target) == 0o755
    assert (target / "f.txt").read_text() == "x"
    with pytest.raises(KeyError):
        with atomic_directory(target) as tmp:
            raise KeyError("stop")
    assert (target / "f.txt").read_text() == "x"
    assert sorted(os.listdir(tmp_path)) == ["out"]
