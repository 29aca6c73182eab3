"""Defects that corrupted data silently (issue 11): clip identity, frames past a clip's end, stale
derived sets, the voxel set of SS latents, and builder processes (orphans, overlapping runs, failed
assets, needless model loads). Crafted assets with known answers; each test failed before the fix."""
from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from data_testkit import asset_copy, assets, process_alive, small_config, tiny_encoders  # noqa: F401 (fixtures)
from test_data_gltf import FLOAT, rig_asset

from ss4d.data.build import DatasetBuilder, clip_lock, main
from ss4d.data.gltf_animation import load_animated_mesh, sample_times, list_clips
from ss4d.data.layout import FolderDataset, read_metadata
from ss4d.data.mesh import load_mesh_sequence

H = math.sqrt(0.5)
QUAT = {0: [0, 0, 0, 1], 90: [0, 0, H, H], -90: [0, 0, -H, H]}
FEATURE = "dinov2_tiny_random_visible"


def multi_animation_asset():
    """The rig of test_data_gltf with four animations: two named "Take 001" with different motion,
    two with non-ASCII names that sanitise alike (one cyclic, one starting at t = 0.5 s)."""
    b = rig_asset()

    def anim(name, times, angles):
        t = b.accessor(np.array(times, np.float32), FLOAT, "SCALAR", minmax=True)
        r = b.accessor(np.array([QUAT[a] for a in angles], np.float32), FLOAT, "VEC4")
        w = b.accessor(np.array([abs(a) / 90 for a in angles], np.float32), FLOAT, "SCALAR")
        return {"name": name, "channels": [{"sampler": 0, "target": {"node": 2, "path": "rotation"}},
                                           {"sampler": 1, "target": {"node": 0, "path": "weights"}}],
                "samplers": [{"input": t, "output": r}, {"input": t, "output": w}]}

    b.doc["animations"] = [anim("Take 001", [0, 1], [0, 90]), anim("Take 001", [0, 1], [0, -90]),
                           anim("走る", [0, 0.5, 1], [0, 90, 0]), anim("跑步", [0.5, 1.5], [0, 90])]
    return b


# frames=6 at 4 fps: samples at 0, .25, ..., 1.25 s; a 1 s clip has 5 frames before its end
FRAMES = dict(frames=6, fps=4.0, animations="all", feature_model=None, steps=("mesh", "voxelize"))


@pytest.fixture
def rig_dir(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    multi_animation_asset().write(d / "rig.glb", kind="glb")
    return d


def records(out: Path) -> dict[str, dict]:
    return {r["clip_id"]: r for r in FolderDataset(out).clip_records()}


# ------------------------------------------------------------------------------------ 1. clip identity
def test_max_clips_per_asset_keeps_moving_clips_spread_over_the_list(tmp_path, rig_dir):
    """--max-clips-per-asset 2 of the rig's four clips: the first and the last (ids keep the full-list index);
    a one-key pose is never picked while moving clips are left."""
    from ss4d.data.build import spread_clips
    from ss4d.data.gltf_animation import ClipInfo

    out = tmp_path / "ds"
    s = DatasetBuilder(small_config(out, max_clips=2, **FRAMES)).run([str(rig_dir)])
    assert not s.failures and sorted(records(out)) == ["rig__0-Take-001", "rig__3-x"]
    clips = [ClipInfo(index=i, name=str(i), start=0.0, end=0.0 if i % 2 else 1.0) for i in range(7)]
    assert [c.index for c in spread_clips(clips, 3)] == [0, 4, 6]           # the moving 0, 2, 4, 6: spread
    assert [c.index for c in spread_clips(clips, 5)] == [0, 2, 4, 6]        # fewer moving clips than the cap
    assert spread_clips(clips, 0) == clips and spread_clips(clips, 7) == clips


def test_duplicate_and_non_ascii_animation_names_get_their_own_clips(tmp_path, rig_dir):
    out = tmp_path / "ds"
    s = DatasetBuilder(small_config(out, **FRAMES)).run([str(rig_dir)])
    assert not s.failures and s.clips_ok == 4
    recs = records(out)
    assert sorted(recs) == ["rig__0-Take-001", "rig__1-Take-001", "rig__2-x", "rig__3-x"]
    clips = list_clips(rig_dir / "rig.glb")
    for clip in clips:  # every folder holds its own animation's meshes (independent reload)
        cid = f"rig__{clip.index}-" + ("Take-001" if clip.name == "Take 001" else "x")
        assert recs[cid]["animation"] == clip.name and recs[cid]["animation_index"] == clip.index
        want = load_animated_mesh(rig_dir / "rig.glb", clip.index, sample_times(clip, 6, 4.0))
        got = load_mesh_sequence(out / "clips" / cid / "mesh")
        np.testing.assert_allclose(got.vertices, want.vertices, atol=1e-6)
        np.testing.assert_allclose(got.times, want.times)
        params = json.loads((out / "clips" / cid / "mesh" / "step.json").read_text())["params"]
        assert params["animation_index"] == clip.index and params["clip_start"] == clip.start
    a = load_mesh_sequence(out / "clips" / "rig__0-Take-001" / "mesh").vertices
    b = load_mesh_sequence(out / "clips" / "rig__1-Take-001" / "mesh").vertices
    assert np.abs(a[-1] - b[-1]).max() > 0.1  # the two "Take 001" really differ
    rows = read_metadata(out)
    assert len(rows) == 4 and {r["animation"] for r in rows} == {"Take 001", "走る", "跑步"}


def test_same_basename_inputs_and_colliding_assets_are_errors(tmp_path, rig_dir, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "rig.glb").write_bytes((rig_dir / "rig.glb").read_bytes())
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "a" / "rig.glb"), str(tmp_path / "b" / "rig.glb"), "-o", str(tmp_path / "o")])
    assert e.value.code == 2 and "same name 'rig.glb'" in capsys.readouterr().err
    assert not (tmp_path / "o" / "clips").exists() or not any((tmp_path / "o" / "clips").iterdir())
    # rig.glb and rig.gltf (or "a b.glb" and "a-b.glb") would share clips/rig__*: both fail, nothing is written
    multi_animation_asset().write(rig_dir / "rig.gltf")
    out = tmp_path / "ds"
    s = DatasetBuilder(small_config(out, **FRAMES)).run([str(rig_dir)])
    assert s.clips_total == 0 and {f["asset"] for f in s.failures} == {"rig.glb", "rig.gltf"}
    assert all("collide" in f["error"] for f in s.failures)
    assert not list((out / "clips").iterdir())
    rows = read_metadata(out)
    assert {(r["source"], r["status"]) for r in rows} == {("rig.glb", "failed"), ("rig.gltf", "failed")}


# ------------------------------------------------------------------------------------ 2. frames past the end
def test_real_frames_are_recorded_and_loop_if_cyclic(tmp_path, rig_dir):
    out = tmp_path / "ds"
    DatasetBuilder(small_config(out, **FRAMES)).run([str(rig_dir)])
    recs = records(out)
    # clamp: 1 s clips sampled at 0, .25, ..., 1.25 s -> 5 real frames (the 6th holds the last pose)
    for cid in ("rig__0-Take-001", "rig__1-Take-001", "rig__2-x", "rig__3-x"):
        assert recs[cid]["num_real_frames"] == 5 and recs[cid]["num_frames"] == 6
        assert "short_clip" in recs[cid]["flags"] and not recs[cid]["flagged"]
    assert recs["rig__2-x"]["cyclic"] and not recs["rig__0-Take-001"]["cyclic"]
    meta = {r["clip_id"]: r for r in read_metadata(out)}
    assert meta["rig__3-x"]["num_real_frames"] == "5"
    frames = [r for r in csv.DictReader(open(out / "frames.csv")) if r["clip_id"] == "rig__0-Take-001"]
    assert [r["past_end"] for r in frames] == ["False"] * 5 + ["True"]

    # loop-if-cyclic: the cyclic clip wraps (all 6 frames real), the others clamp
    out2 = tmp_path / "ds2"
    DatasetBuilder(small_config(out2, **dict(FRAMES, time_mode="loop-if-cyclic"))).run([str(rig_dir)])
    recs = records(out2)
    assert recs["rig__2-x"]["num_real_frames"] == 6 and recs["rig__2-x"]["time_mode_used"] == "loop"
    np.testing.assert_allclose(recs["rig__2-x"]["times"], [0, .25, .5, .75, 0, .25])  # wrapped (1 s = 0 s)
    assert recs["rig__0-Take-001"]["num_real_frames"] == 5 and recs["rig__0-Take-001"]["time_mode_used"] == "clamp"


def test_old_records_without_real_frames_read_as_all_frames(tmp_path):
    from ss4d.data.layout import CLIPS_DIR, current_record

    assert current_record(tmp_path, {"num_frames": 7})["num_real_frames"] == 7
    (tmp_path / CLIPS_DIR / "c").mkdir(parents=True)
    (tmp_path / CLIPS_DIR / "c" / "clip.json").write_text(json.dumps({"clip_id": "c", "num_frames": 4}))
    assert FolderDataset(tmp_path).clip_records()[0]["num_real_frames"] == 4


# ------------------------------------------------------------------------------------ 3. stale derived sets
def test_sets_from_old_renders_are_not_advertised(tmp_path, asset_copy):
    (asset_copy / "AnimatedMorphCube.glb").unlink()
    out = tmp_path / "ds"
    base = dict(frames=2, views=2, steps=("mesh", "voxelize", "render", "features"))
    DatasetBuilder(small_config(out, **base)).run([str(asset_copy)])
    assert read_metadata(out)[0][f"feature_{FEATURE}"] == "True"
    # re-render with other settings, features not recomputed: the old features no longer match
    DatasetBuilder(small_config(out, **dict(base, views=3, steps=("mesh", "voxelize", "render")))).run(
        [str(asset_copy)])
    row = read_metadata(out)[0]
    assert row.get(f"feature_{FEATURE}", "") in ("", "False") and row["rendered"] == "True"
    (rec,) = FolderDataset(out).clip_records()
    assert FEATURE not in rec.get("features", {})


def test_step_hashes_follow_weight_contents_not_paths(tmp_path, asset_copy):
    import torch

    from trellis_ext.models import get_model_class, save_pretrained

    def save_encoder(seed):
        torch.manual_seed(seed)
        ss = get_model_class("SparseStructureEncoder")(in_channels=1, latent_channels=8, num_res_blocks=1,
                                                       channels=[4, 8, 8], num_res_blocks_middle=1)
        save_pretrained(ss, str(tmp_path / "ss_enc"))

    (asset_copy / "AnimatedMorphCube.glb").unlink()
    out = tmp_path / "ds"
    cfg = dict(frames=2, steps=("mesh", "voxelize", "ss_latent"), feature_model=None, ss_encoder=str(tmp_path / "ss_enc"))
    save_encoder(0)
    DatasetBuilder(small_config(out, **cfg)).run([str(asset_copy)])
    assert DatasetBuilder(small_config(out, **cfg)).run([str(asset_copy)]).steps_run == {}
    save_encoder(1)  # same path, new weights: the latents are redone
    assert DatasetBuilder(small_config(out, **cfg)).run([str(asset_copy)]).steps_run == {"ss_latent": 1}


# ------------------------------------------------------------------------------------ 4. SS latents' voxel set
def test_ss_latents_encode_the_voxels_the_slat_stage_sees(tmp_path, asset_copy):
    from ss4d.data.encode import encode_ss_latents, load_encoder
    from ss4d.data.layout import load_feature_frame
    from ss4d.data.voxelize import load_voxels

    enc_path = tiny_encoders(tmp_path)["ss_encoder"]
    (asset_copy / "AnimatedMorphCube.glb").unlink()
    out = tmp_path / "ds"
    s = DatasetBuilder(small_config(out, frames=2, views=2, ss_encoder=enc_path)).run([str(asset_copy)])
    assert not s.failures
    clip = out / "clips" / "RiggedFigure__0-animation_0"
    kept = [load_feature_frame(clip / "features" / FEATURE / f"{t:03d}.npz")[0] for t in range(2)]
    every = [load_voxels(clip / "voxels" / f"{t:03d}.npz")[0] for t in range(2)]
    assert sum(map(len, kept)) < sum(map(len, every))  # two views leave voxels unseen
    enc = load_encoder(enc_path)
    want = encode_ss_latents(enc, kept, 64)
    ds = FolderDataset(out)
    for t in range(2):
        np.testing.assert_array_equal(ds.load_ss_latent(clip.name, "ss_enc_tiny", t), want[t])
    assert not np.allclose(encode_ss_latents(enc, every, 64), want)
    assert ds.clip_records()[0]["ss_latents"]["ss_enc_tiny"] == {"voxel_set": f"features:{FEATURE}"}


def test_ss_mirror_encodes_the_mirrored_voxels_as_a_set_of_its_own(tmp_path, asset_copy):
    """``--ss-mirror``: the set ``<enc>__mirror_x`` holds the encoder's latents of the same voxels mirrored across
    x = 0 (x -> R - 1 - x); the plain set is the same as without it, and a rerun finds both done."""
    from ss4d.data.encode import encode_ss_latents, load_encoder
    from ss4d.data.layout import load_feature_frame, mirror_voxels, mirrored_ss_set

    enc_path = tiny_encoders(tmp_path)["ss_encoder"]
    (asset_copy / "AnimatedMorphCube.glb").unlink()
    out = tmp_path / "ds"
    cfg = dict(frames=2, views=2, ss_encoder=enc_path, ss_mirror=True)
    assert not DatasetBuilder(small_config(out, **cfg)).run([str(asset_copy)]).failures
    clip = out / "clips" / "RiggedFigure__0-animation_0"
    kept = [load_feature_frame(clip / "features" / FEATURE / f"{t:03d}.npz")[0] for t in range(2)]
    enc, ds = load_encoder(enc_path), FolderDataset(out)
    plain, mirrored = encode_ss_latents(enc, kept, 64), encode_ss_latents(enc, [mirror_voxels(v, 64) for v in kept], 64)
    name = mirrored_ss_set("ss_enc_tiny")
    assert name == "ss_enc_tiny__mirror_x"
    for t in range(2):
        np.testing.assert_array_equal(ds.load_ss_latent(clip.name, "ss_enc_tiny", t), plain[t])
        np.testing.assert_array_equal(ds.load_ss_latent(clip.name, name, t), mirrored[t])
        assert not np.allclose(plain[t], mirrored[t])                       # the figure is not mirror-symmetric
    assert ds.clip_records()[0]["ss_latents"] == {k: {"voxel_set": f"features:{FEATURE}"}
                                                  for k in ("ss_enc_tiny", name)}
    assert DatasetBuilder(small_config(out, **cfg)).run([str(asset_copy)]).steps_run == {}


def test_mirror_voxels_maps_the_grid_onto_itself():
    from ss4d.data.layout import mirror_voxels

    idx = np.random.default_rng(0).integers(0, 32, (200, 3))
    m = mirror_voxels(idx, 32)
    np.testing.assert_array_equal(m[:, 1:], idx[:, 1:])
    np.testing.assert_array_equal(m[:, 0], 31 - idx[:, 0])
    np.testing.assert_array_equal(mirror_voxels(m, 32), idx)                  # an involution
    centre = (idx[:, 0] + 0.5) / 32 - 0.5                                     # voxel centres mirror across x = 0
    np.testing.assert_allclose((m[:, 0] + 0.5) / 32 - 0.5, -centre)


# ------------------------------------------------------------------------------------ 5. processes
FAKE_BLENDER = """#!/bin/sh
# stand-in for the Blender Python: passes the bpy probe, then sleeps like a long render
[ "$1" = "-c" ] && exit 0
echo $$ > "{pid_file}"
exec sleep 120
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_killed_builder_takes_its_blender_child_along(tmp_path):
    pid_file = tmp_path / "blender.pid"
    fake = tmp_path / "fake-blender-python"
    fake.write_text(FAKE_BLENDER.format(pid_file=pid_file))
    fake.chmod(0o755)
    builder = textwrap.dedent(f"""
        from pathlib import Path
        from ss4d.data.render import run_blender_job
        run_blender_job({{"mode": "list", "source": "x.fbx", "output": "o.json"}}, Path({str(tmp_path / 'work')!r}))
    """)
    env = dict(os.environ, SS4D_BLENDER_PYTHON=str(fake))
    proc = subprocess.Popen([sys.executable, "-c", builder], env=env)
    try:
        deadline = time.time() + 60
        while not pid_file.is_file() or not pid_file.read_text().strip():
            assert time.time() < deadline and proc.poll() is None, "the stand-in renderer never started"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert os.getpgid(child) == child != os.getpgid(proc.pid)  # its own process group
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 10
        while process_alive(child) and time.time() < deadline:
            time.sleep(0.05)
        alive = process_alive(child)
        if alive:
            os.kill(child, signal.SIGKILL)
        assert not alive, "the renderer outlived the SIGKILLed builder"
    finally:
        proc.kill()


LOCK_HOLDER = """
import sys, time
from pathlib import Path
from ss4d.data.build import clip_lock
with clip_lock(Path(sys.argv[1])) as got:
    print("locked" if got else "busy", flush=True)
    sys.stdin.readline()
"""


def test_overlapping_builds_leave_each_others_clips_alone(tmp_path, asset_copy):
    (asset_copy / "AnimatedMorphCube.glb").unlink()
    out = tmp_path / "ds"
    clip = out / "clips" / "RiggedFigure__0-animation_0"
    clip.mkdir(parents=True)
    other_tmp = clip / "mesh.tmp-otherhost-4242-abc"  # the other build's step in progress
    other_tmp.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(clip / ".lock")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        cfg = dict(frames=2, steps=("mesh", "voxelize"), feature_model=None)
        s = DatasetBuilder(small_config(out, **cfg)).run([str(asset_copy)])
        assert s.clips_busy == ["RiggedFigure__0-animation_0"] and s.clips_ok == 0 and not s.failures
        assert other_tmp.is_dir() and not (clip / "clip.json").exists()
    finally:
        holder.communicate("\n")
    s = DatasetBuilder(small_config(out, **cfg)).run([str(asset_copy)])  # the other build is gone
    assert s.clips_ok == 1 and not s.clips_busy and not other_tmp.exists()
    with clip_lock(clip / ".lock") as got:  # released after the run
        assert got


def test_failed_assets_are_in_metadata_also_after_merge(tmp_path, asset_copy):
    raw = (asset_copy / "RiggedFigure.glb").read_bytes()
    (asset_copy / "broken.glb").write_bytes(raw[: len(raw) // 3])
    out = tmp_path / "ds"
    for rank in range(2):
        DatasetBuilder(small_config(out, frames=2, steps=("mesh",), feature_model=None, rank=rank,
                                    world_size=2)).run([str(asset_copy)])
    assert main(["-o", str(out), "--merge-only"]) == 0
    rows = {r["source"]: r for r in read_metadata(out)}
    assert set(rows) == {"AnimatedMorphCube.glb", "RiggedFigure.glb", "broken.glb"}
    assert rows["broken.glb"]["status"] == "failed" and "truncated" in rows["broken.glb"]["error"]
    (asset_copy / "broken.glb").unlink()  # fixed: the failure record goes away with the next run
    (asset_copy / "broken.glb").write_bytes(raw)
    DatasetBuilder(small_config(out, frames=2, steps=("mesh",), feature_model=None)).run([str(asset_copy)])
    assert all(r["status"] == "ok" for r in read_metadata(out))


def test_rerun_with_nothing_to_do_does_not_load_the_feature_model(tmp_path, asset_copy, monkeypatch):
    (asset_copy / "AnimatedMorphCube.glb").unlink()
    out = tmp_path / "ds"
    cfg = dict(frames=2, views=2, steps=("mesh", "voxelize", "render", "features"))
    DatasetBuilder(small_config(out, **cfg)).run([str(asset_copy)])

    def no_load(*a, **k):
        raise AssertionError("DINOv2 loaded although every feature set is done")

    monkeypatch.setattr("ss4d.conditioning.dinov2.load_dinov2", no_load)
    s = DatasetBuilder(small_config(out, **cfg)).run([str(asset_copy)])
    assert not s.failures and s.steps_run == {} and s.steps_skipped["features"] == 1
