"""The one sparse fold helper: per-clip, per-frame lists <-> coords (b·T+t, x, y, z)."""
import numpy as np
import pytest
import torch

from ss4d.frames import FrameLayoutError, fold_sparse_frames, unfold_sparse_coords


def test_fold_sparse_frames_layout_and_roundtrip():
    rng = np.random.default_rng(0)
    clips = [[rng.integers(0, 8, (n, 3)) for n in ns] for ns in ((3, 1, 2), (0, 4, 2))]
    feats = [[rng.normal(size=(len(c), 5)) for c in clip] for clip in clips]
    coords, f = fold_sparse_frames(clips, feats)
    assert coords.dtype == torch.int32 and coords.shape == (12, 4) and f.shape == (12, 5)
    # row b·T+t, batch-major then frame-minor, rows contiguous in that order
    expected = np.concatenate([np.full(len(c), b * 3 + t) for b, clip in enumerate(clips) for t, c in enumerate(clip)])
    np.testing.assert_array_equal(coords[:, 0].numpy(), expected)
    back = unfold_sparse_coords(coords, 6)
    for i, xyz in enumerate(back):
        np.testing.assert_array_equal(xyz.numpy(), clips[i // 3][i % 3])
    np.testing.assert_allclose(f[:3].numpy(), feats[0][0], rtol=1e-6)


def test_fold_sparse_frames_rejects_ragged_clips_and_feature_mismatch():
    with pytest.raises(FrameLayoutError, match="same number of frames"):
        fold_sparse_frames([[np.zeros((1, 3))], [np.zeros((1, 3))] * 2])
    with pytest.raises(FrameLayoutError, match="feature rows"):
        fold_sparse_frames([[np.zeros((2, 3))]], [[np.zeros((1, 4))]])
