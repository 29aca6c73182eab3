"""Packed shards (ss4d-pack-dataset): the shard reader returns exactly what the folder reader returns,
for every DatasetReader method; streaming with webdataset yields the same bytes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from data_testkit import assets, full_dataset, full_inputs  # noqa: F401 (fixtures)

from ss4d.data.layout import FolderDataset, ShardMembers, open_dataset
from ss4d.data.shards import ShardDataset, iter_clip_samples, main, pack_dataset


@pytest.fixture(scope="module")
def packed(full_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "shards"
    # a small shard size so the two clips land in two shards
    assert main([str(full_dataset), "-o", str(out), "--shard-size", "1k", "--no-progress"]) == 0
    return out


def assert_same(a, b):
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, list) and a and hasattr(a[0], "c2w_blender"):  # cameras
        assert len(a) == len(b)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x.c2w_blender, y.c2w_blender)
            assert (x.fov_x, x.width, x.height) == (y.fov_x, y.width, y.height)
    else:
        assert a == b


def test_every_reader_method_returns_the_same_arrays(full_dataset, packed):
    folder, shards = open_dataset(full_dataset), open_dataset(packed)
    assert isinstance(folder, FolderDataset) and isinstance(shards, ShardDataset)
    index = json.loads((packed / "index.json").read_text())
    assert len(index["shards"]) == 2 and len({c["shard"] for c in index["clips"].values()}) == 2
    recs = folder.clip_records()
    assert_same(recs, shards.clip_records())
    assert len(recs) == 2 and all(r["status"] == "ok" for r in recs)
    checked = set()
    for r in recs:
        cid = r["clip_id"]
        (feat,), (ss,), (lat,) = r["features"], r["ss_latents"], r["latents"]
        for t in range(r["num_frames"]):
            for method, args in (("load_voxels", ()), ("load_features", (feat,)), ("load_ss_latent", (ss,)),
                                 ("load_slat_latent", (lat,)), ("load_views", ())):
                a = getattr(folder, method)(cid, *args, t)
                assert_same(a, getattr(shards, method)(cid, *args, t))
                checked.add(method)
        assert_same(folder.load_cond(cid), shards.load_cond(cid))
        for name in (lat, f"ss_{ss}"):
            assert folder.latent_stats(name) == shards.latent_stats(name)
    assert checked == {"load_voxels", "load_features", "load_ss_latent", "load_slat_latent", "load_views"}
    views, cams = shards.load_views(recs[0]["clip_id"], 1)
    assert views.shape == (2, 128, 128, 4) and views[..., 3].any() and len(cams) == 2


def test_streaming_yields_the_stored_bytes(full_dataset, packed):
    ds = ShardDataset(packed)
    samples = list(iter_clip_samples(packed))
    assert [s["__key__"] for s in samples] == sorted(ds.index["clips"])
    for s in samples:
        members = {k: v for k, v in s.items() if not k.startswith("__")}
        assert set(members) == set(ds.index["clips"][s["__key__"]]["members"])
        for name, data in members.items():
            assert data == ds.read(s["__key__"], name)
        # members are the folder layout's bytes, unchanged
        assert members[ShardMembers.voxel_frame(0)] == \
            (full_dataset / "clips" / s["__key__"] / "voxels" / "000.npz").read_bytes()


def test_pack_refuses_to_replace_other_folders(full_dataset, tmp_path, capsys):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    assert main([str(full_dataset), "-o", str(other), "--no-progress"]) == 2
    assert "not a shard folder" in capsys.readouterr().err and (other / "keep.txt").is_file()
    with pytest.raises(FileNotFoundError, match="no clips"):
        pack_dataset(tmp_path / "empty", tmp_path / "s", progress=False)
    with pytest.raises(FileNotFoundError, match="not a dataset"):
        open_dataset(tmp_path)
