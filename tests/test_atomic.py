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


# ------------------------------------------------------------------------------ stale temporaries (issue 8 item 4)
@pytest.fixture
def dead_pid():
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def live_pid():
    import subprocess

    p = subprocess.Popen(["sleep", "60"])
    yield p.pid
    p.kill()
    p.wait()


def test_temporaries_carry_the_pid_and_dead_ones_are_swept(tmp_path, dead_pid, live_pid):
    """A SIGKILLed writer's temp folder/file is removed by the next writer into the same parent; a
    live process's temporaries, look-alikes and the user's own files keep every byte."""
    from user_files import plant_user_files, snapshot

    from trellis_ext.atomic import TEMP_MARK

    stale_dir = tmp_path / f".out.tmp-{TEMP_MARK}{dead_pid}-abcd1234"
    plant_user_files(stale_dir)  # partial outputs of the killed run
    stale_file = tmp_path / f".frame_000.ply.{TEMP_MARK}{dead_pid}-zz_9yy8x.tmp"
    stale_file.write_bytes(b"half a ply")
    keep = plant_user_files(tmp_path / "mine")
    (tmp_path / f".out.tmp-{TEMP_MARK}{live_pid}-abcd1234").mkdir()          # a running writer's
    (tmp_path / ".out.tmp-precious").mkdir()                                  # no pid mark
    (tmp_path / f"{TEMP_MARK}{dead_pid}-abcd1234.bak").write_text("user")     # mark not at the end
    (tmp_path / f".link.{TEMP_MARK}{dead_pid}-abcd1234").symlink_to(keep)     # symlinks are never followed
    before = snapshot(tmp_path)
    with atomic_directory(tmp_path / "out") as tmp:
        assert f"{TEMP_MARK}{os.getpid()}-" in os.path.basename(tmp)
        with open(os.path.join(tmp, "f.txt"), "w") as f:
            f.write("new")
    after = snapshot(tmp_path)
    gone = {k for k in before if k not in after}
    assert gone == {stale_dir.name, stale_file.name} | {k for k in before if k.startswith(stale_dir.name + os.sep)}
    assert all(after[k] == v for k, v in before.items() if k not in gone)
    assert (tmp_path / "out" / "f.txt").read_text() == "new"


def test_atomic_directory_keeps_the_old_folder_until_the_new_one_is_in_place(tmp_path, monkeypatch):
    """If the final rename fails, the previous folder is put back byte for byte."""
    from user_files import plant_user_files, snapshot

    import trellis_ext.atomic as atomic

    target = plant_user_files(tmp_path / "out")
    before = snapshot(target)
    real_replace = os.replace

    def failing_replace(src, dst):
        if "old-" not in os.path.basename(str(src)) and str(dst) == str(target):  # the new folder moving in
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError):
        with atomic_directory(target) as tmp:
            open(os.path.join(tmp, "new.txt"), "w").close()
    assert snapshot(target) == before
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_merged_directory_replaces_only_its_files(tmp_path, umask_022):
    from user_files import plant_user_files, snapshot

    from trellis_ext.atomic import merged_directory

    target = plant_user_files(tmp_path / "model")
    (target / "ckpts").mkdir()
    (target / "ckpts" / "a.json").write_text("old")
    before = snapshot(target)
    with merged_directory(target) as tmp:
        os.makedirs(os.path.join(tmp, "ckpts"))
        for rel in ("ckpts/a.json", "pipeline.json"):
            with open(os.path.join(tmp, rel), "w") as f:
                f.write("new")
    after = snapshot(target)
    assert after["ckpts/a.json"] == b"new" and after["pipeline.json"] == b"new"
    assert {k: v for k, v in after.items() if k not in ("ckpts/a.json", "pipeline.json")} == \
        {k: v for k, v in before.items() if k != "ckpts/a.json"}
    assert _mode(target / "pipeline.json") == 0o644
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_a_killed_checkpoint_writer_is_swept_by_the_next(tmp_path):
    """SIGKILL inside trellis_ext's checkpoint save_pretrained leaves its temp folder; the next save
    into the same folder removes it (it is named with the dead writer's pid)."""
    import subprocess
    import sys

    code = ("import os, signal, torch, safetensors.torch as st\n"
            "from trellis_ext.models import checkpoint\n"
            "st.save_file = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
            "checkpoint.save_pretrained(torch.nn.Linear(2, 2), sys.argv[1], name='Linear', args={})\n")
    p = subprocess.run([sys.executable, "-c", "import sys\n" + code, str(tmp_path / "lin")], timeout=120)
    assert p.returncode == -9
    left = os.listdir(tmp_path)
    assert len(left) == 1 and left[0].startswith(".lin.")
    import torch

    from trellis_ext.models.checkpoint import save_pretrained

    save_pretrained(torch.nn.Linear(2, 2), str(tmp_path / "lin"), name="Linear", args={})
    assert sorted(os.listdir(tmp_path)) == ["lin.json", "lin.safetensors"]
