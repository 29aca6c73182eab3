"""``dataset.cond_crop``: the conditioning frames cropped around the window's frames (``window``, the default) or
around all the clip's frames (``clip``), so that a frame's image in a one-frame window (3D pretraining) equals its
image when the whole clip is the input, as at inference; mirrored windows use the mirrored clip's box; older configs
keep their hash; bad values are refused in one line."""
import numpy as np
import pytest
import torch

from train_testkit import tiny_config, tiny_dataset  # noqa: F401  (fixture)

from ss4d.data.layout import FolderDataset
from ss4d.preprocess import preprocess_frames
from ss4d.training.config import TrainConfig
from ss4d.training.data import Window, conditioning_frames
from ss4d.training.errors import TrainingInputError
from ss4d.training.masking import MaskConfig
from ss4d.training.stage import StageDataset
from ss4d.training.stages import STAGES

NO_MASKS = {"clip_prob": 0.0}


def _as_tensor(images) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2).float() / 255


def _moving_clip(reader):
    """A clip whose per-frame boxes differ (so the two crops can be told apart), with its frame count."""
    for r in reader.clip_records():
        video, _ = reader.load_cond(r["clip_id"])
        boxes = {tuple(np.flatnonzero(f[..., 3].any(axis=a))[[0, -1]]) for f in video for a in (0, 1)}
        if len(boxes) > 2:
            return r["clip_id"], len(video)
    pytest.fail("the tiny dataset has no moving clip")


def _stage(data, crop, frames):
    raw = tiny_config("ss_flow", phases=[{"frames": frames, "steps": 1, "batch_size": 1}])
    raw["conditioning"]["mask"] = NO_MASKS
    raw["dataset"]["cond_source"] = "cond"
    if crop is not None:
        raw["dataset"]["cond_crop"] = crop
    reader = FolderDataset(data)
    return reader, STAGES["ss_flow"](TrainConfig(raw), reader)


def test_a_one_frame_window_is_cropped_as_the_whole_clip_at_inference(tiny_dataset):  # noqa: F811
    """With ``clip`` every frame of a one-frame window (what 3D pretraining draws) equals that frame of the whole
    video preprocessed as inference does it; with ``window`` it is cropped to its own pose and differs."""
    reader, clip_stage = _stage(tiny_dataset, "clip", 1)
    _, window_stage = _stage(tiny_dataset, None, 1)
    clip, frames = _moving_clip(reader)
    video, _ = reader.load_cond(clip)
    whole = _as_tensor(preprocess_frames(list(video))[0])            # ss4d.Pipeline.preprocess of the whole clip
    rng = np.random.default_rng(0)
    differs = 0
    for t in range(frames):
        got = clip_stage.cond_images(Window(clip, [t]), rng, augment=False)
        assert torch.equal(got[0], whole[t]), t
        own = window_stage.cond_images(Window(clip, [t]), rng, augment=False)
        differs += not torch.equal(own[0], whole[t])
    assert differs >= frames // 2


def test_samples_of_a_training_run_carry_the_clip_crop(tiny_dataset):  # noqa: F811
    """Through the trainer's dataset: a sample's conditioning frames are the whole clip's images at its window."""
    reader, stage = _stage(tiny_dataset, "clip", 2)
    data = StageDataset(stage, stage.index.fitting(2), 2, seed=0, rank=0)
    for step in range(4):
        sample = data[(step, 0, 0)]
        clip, frames = sample["window"]
        video, _ = reader.load_cond(clip)
        whole = _as_tensor(preprocess_frames(list(video))[0])
        assert torch.equal(sample["cond_images"], whole[frames])


def test_random_views_and_mirrored_windows_use_their_own_clip_box(tiny_dataset):  # noqa: F811
    """``renders``: the box of the drawn view over all the clip's frames; a mirrored window: the mirrored clip's box
    (its frames equal those of the whole mirrored clip cropped around its own frames)."""
    reader = FolderDataset(tiny_dataset)
    clip, frames = _moving_clip(reader)
    everything = list(range(frames))
    for t in (0, frames - 1):
        one = conditioning_frames(reader, Window(clip, [t]), "renders", MaskConfig(), np.random.default_rng(3),
                                  augment=False, crop="clip", clip_frames=frames)
        whole = conditioning_frames(reader, Window(clip, everything), "renders", MaskConfig(),
                                    np.random.default_rng(3), augment=False)          # the same view is drawn
        assert torch.equal(one[0], whole[t])
        cache = {}
        mirrored = conditioning_frames(reader, Window(clip, [t], mirrored=True), "cond", MaskConfig(),
                                       np.random.default_rng(0), augment=False, crop="clip", bbox_cache=cache)
        whole_mirrored = conditioning_frames(reader, Window(clip, everything, mirrored=True), "cond", MaskConfig(),
                                             np.random.default_rng(0), augment=False)
        assert torch.equal(mirrored[0], whole_mirrored[t])
        assert set(cache) == {(clip, None, True)}


def test_absent_means_window_and_keeps_the_hash_bad_values_are_refused():
    phases = [{"frames": 1, "steps": 1, "batch_size": 1}]
    cfg = TrainConfig({"stage": "ss_flow", "progressive": phases})
    assert "cond_crop" not in cfg.raw["dataset"]                   # older configs' hashes do not change
    TrainConfig({"stage": "ss_flow", "progressive": phases, "dataset": {"cond_crop": "clip"}})
    with pytest.raises(TrainingInputError, match="dataset.cond_crop 'frame'") as e:
        TrainConfig({"stage": "ss_flow", "progressive": phases, "dataset": {"cond_crop": "frame"}})
    assert "use 'window'" in str(e.value) and "\n" not in str(e.value)
