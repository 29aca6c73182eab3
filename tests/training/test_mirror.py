"""Mirror augmentation of the structure flows (ss4d.training.mirror): a mirrored window pairs the conditioning frames
flipped left-right with the SS latents of the mirrored voxels; the geometry that makes this a real pair; off by
default without touching the other random draws; structure flows only."""
import numpy as np
import pytest
import torch

from train_testkit import SS_ENCODER, tiny_config, tiny_dataset  # noqa: F401  (fixture)

from ss4d.data.cameras import conditioning_camera
from ss4d.data.layout import FolderDataset, mirror_voxels, mirrored_ss_set
from ss4d.data.voxelize import voxel_centers
from ss4d.preprocess import preprocess_frames
from ss4d.training.config import TrainConfig
from ss4d.training.errors import TrainingInputError
from ss4d.training.mirror import MirrorConfig, draw_mirror
from ss4d.training.stage import StageDataset
from ss4d.training.stages import STAGES

FRAMES = 4
NO_MASKS = {"clip_prob": 0.0}


def test_the_front_camera_sees_the_mirrored_object_as_its_image_flipped():
    """Every voxel centre of the mirrored grid lands where the original lands in the left-right flipped image
    (pixel column u -> W - u), at the same row and depth: the front conditioning camera lies in the mirror plane."""
    size = 128
    cam = conditioning_camera("front", size)
    idx = np.random.default_rng(0).integers(0, 32, (500, 3))
    uv, depth = cam.project(voxel_centers(idx, 32))
    uv_m, depth_m = cam.project(voxel_centers(mirror_voxels(idx, 32), 32))
    np.testing.assert_allclose(uv_m[:, 0], size - uv[:, 0], atol=1e-4)
    np.testing.assert_allclose(uv_m[:, 1], uv[:, 1], atol=1e-4)
    np.testing.assert_allclose(depth_m, depth, atol=1e-5)
    assert np.ptp(uv[:, 0]) > size / 4                                      # the points do spread across the image


def _dataset(stage_cfg, data):
    reader = FolderDataset(data)
    stage = STAGES["ss_flow"](TrainConfig(stage_cfg), reader)
    return reader, stage, StageDataset(stage, stage.index.fitting(FRAMES), FRAMES, seed=0, rank=0)


def _config(mirror):
    raw = tiny_config("ss_flow", phases=[{"frames": FRAMES, "steps": 1, "batch_size": 1}])
    raw["conditioning"]["mask"] = NO_MASKS
    raw["dataset"]["cond_source"] = "cond"      # the fixed front camera (the small model's; a random view is drawn
                                                # after the mirror, so a mirrored sample could show another view)
    if mirror is not None:
        raw["dataset"]["mirror"] = mirror
    return raw


def test_a_mirrored_window_pairs_flipped_frames_with_mirrored_latents(tiny_dataset):  # noqa: F811
    reader, _, plain = _dataset(_config(None), tiny_dataset)
    _, _, mirrored = _dataset(_config({"prob": 1.0}), tiny_dataset)
    for key in ((3, 0, 0), (5, 0, 1)):
        a, m = plain[key], mirrored[key]
        assert a["window"] == m["window"]                                  # the same window of the same clip
        clip, frames = m["window"]
        want = np.stack([reader.load_ss_latent(clip, mirrored_ss_set(SS_ENCODER), t) for t in frames])
        np.testing.assert_array_equal(m["x_0"].numpy(), want)
        assert not torch.equal(m["x_0"], a["x_0"])
        # the conditioning frames are the video's flipped left-right, then preprocessed as at inference
        video, _ = reader.load_cond(clip)
        images, _ = preprocess_frames([video[t][:, ::-1] for t in frames])
        want = torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2).float() / 255
        assert torch.equal(m["cond_images"], want)
        assert not torch.equal(m["cond_images"], a["cond_images"])


def test_off_by_default_and_the_other_draws_stay_as_they_were(tiny_dataset):  # noqa: F811
    """``prob`` 0 draws nothing: samples equal those of a config without the key (masks on, so a changed random
    stream would show); evaluation batches (augment off) are never mirrored."""
    masks = {"clip_prob": 1.0, "frame_prob": 1.0, "min_size": 0.2, "max_size": 0.4}
    raws = [_config(m) for m in (None, {"prob": 0.0}, {"prob": 0.5})]
    for raw in raws:
        raw["conditioning"]["mask"] = masks
    _, _, none = _dataset(raws[0], tiny_dataset)
    _, _, zero = _dataset(raws[1], tiny_dataset)
    _, stage, half = _dataset(raws[2], tiny_dataset)
    assert torch.equal(none[(2, 0, 0)]["cond_images"], zero[(2, 0, 0)]["cond_images"])
    assert torch.equal(none[(2, 0, 0)]["x_0"], zero[(2, 0, 0)]["x_0"])
    drawn = [draw_mirror(stage.mirror, np.random.default_rng(s)) for s in range(200)]
    assert 0.4 < np.mean(drawn) < 0.6
    evaluation = StageDataset(stage, stage.index.fitting(FRAMES), FRAMES, seed=0, rank=0, augment=False)
    _, _, plain = _dataset(_config(None), tiny_dataset)
    for step in range(6):
        assert torch.equal(evaluation[(step, 0, 0)]["x_0"], plain[(step, 0, 0)]["x_0"])
    assert not draw_mirror(MirrorConfig(), np.random.default_rng(0))


def test_structure_flows_only_and_bad_values_are_refused(tiny_dataset):  # noqa: F811
    phases = [{"frames": 2, "steps": 1, "batch_size": 1}]
    for stage in ("slat_flow", "slat_vae", "ss_vae"):
        with pytest.raises(TrainingInputError, match=f"dataset.mirror is on for the {stage} stage"):
            TrainConfig({"stage": stage, "dataset": {"mirror": {"prob": 0.5}}, "progressive": phases})
    for bad in ({"prob": 1.5}, {"prob": "often"}, {"axis": "y"}):
        with pytest.raises(TrainingInputError, match="bad dataset.mirror"):
            MirrorConfig.from_dict(bad)

    class WithoutMirroredSet(FolderDataset):                            # a dataset built without --ss-mirror
        def clip_records(self):
            recs = super().clip_records()
            for r in recs:
                r.get("ss_latents", {}).pop(mirrored_ss_set(SS_ENCODER), None)
            return recs

    with pytest.raises(TrainingInputError, match="no ss_latents set 'ss_enc_tiny__mirror_x'") as e:
        STAGES["ss_flow"](TrainConfig(_config({"prob": 0.5})), WithoutMirroredSet(tiny_dataset))
    assert "--ss-mirror" in e.value.hint
    STAGES["ss_flow"](TrainConfig(_config(None)), WithoutMirroredSet(tiny_dataset))    # not needed when off
