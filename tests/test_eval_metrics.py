"""Evaluation metrics against closed forms and independent implementations (scikit-image, scipy)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ss4d.evaluation.metrics import (PSNR_EPS, chamfer_distance, flicker, frechet_distance, gaussian_window, psnr,
                                     silhouette_iou, ssim)


def _images(b=2, c=3, h=40, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w, generator=g, dtype=torch.float64)


def _smooth_images(b=2, h=48, w=48, seed=0):
    """Smooth test images (blurred noise), so shifts and blurs change them the way photos change."""
    x = _images(b, 3, h, w, seed)
    k = gaussian_window(9, 2.0, dtype=torch.float64)
    k2 = (k[:, None] * k[None, :]).expand(3, 1, 9, 9)
    return F.conv2d(F.pad(x, (4, 4, 4, 4), mode="reflect"), k2, groups=3)


# ------------------------------------------------------------------------------------------------ PSNR
def test_psnr_closed_form():
    gt = _images()
    for d in (0.01, 0.1, 0.25):
        assert torch.allclose(psnr(gt + d, gt), torch.full((2,), 10 * math.log10(1 / d ** 2), dtype=torch.float64),
                              atol=1e-8)
    gt255 = gt * 255
    assert torch.allclose(psnr(gt255 + 5.0, gt255, data_range=255.0),
                          torch.full((2,), 10 * math.log10(255 ** 2 / 25), dtype=torch.float64), atol=1e-8)


def test_psnr_identical_is_finite_maximum_and_per_item():
    gt = _images()
    best = psnr(gt, gt)
    assert torch.allclose(best, torch.full((2,), -10 * math.log10(PSNR_EPS), dtype=torch.float64))
    pred = gt.clone()
    pred[1] += 0.1
    out = psnr(pred, gt)
    assert out[0] == best[0] and out[1] < best[1]


def test_psnr_rejects_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(_images(h=40), _images(h=32))


# ------------------------------------------------------------------------------------------------ SSIM
def test_ssim_matches_scikit_image():
    skimage_metrics = pytest.importorskip("skimage.metrics", reason="scikit-image (dev extra) not installed")
    pred, gt = _images(seed=1), _images(seed=2)
    pred = 0.5 * pred + 0.5 * gt  # correlated, so SSIM is well inside (0, 1)
    ours = ssim(pred, gt)
    for i in range(2):
        ref = skimage_metrics.structural_similarity(
            pred[i].permute(1, 2, 0).numpy(), gt[i].permute(1, 2, 0).numpy(), channel_axis=2, data_range=1.0,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert abs(float(ours[i]) - ref) < 1e-4


def test_ssim_zero_padding_is_trellis_loss():
    """padding='zero' equals a direct 2-D-window implementation of TRELLIS's ``loss_utils.ssim``."""
    pred, gt = _images(seed=3), _images(seed=4)
    g1 = gaussian_window(11, 1.5, dtype=torch.float64)
    win = (g1[:, None] @ g1[None, :]).expand(3, 1, 11, 11).contiguous()

    def blur(x):
        return F.conv2d(x, win, padding=5, groups=3)

    mu1, mu2 = blur(pred), blur(gt)
    s11 = blur(pred * pred) - mu1 ** 2
    s22 = blur(gt * gt) - mu2 ** 2
    s12 = blur(pred * gt) - mu1 * mu2
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ref = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 ** 2 + mu2 ** 2 + c1) * (s11 + s22 + c2))
    assert torch.allclose(ssim(pred, gt, padding="zero"), ref.flatten(1).mean(1), atol=1e-10)
    # away from the border both paddings give the same map
    full = ssim(pred, gt, padding="zero", reduce=False)
    valid = ssim(pred, gt, reduce=False)
    assert torch.allclose(full[..., 5:-5, 5:-5], valid, atol=1e-10)


def test_ssim_perfect_score_and_perturbations():
    gt = _smooth_images()
    assert torch.allclose(ssim(gt, gt), torch.ones(2, dtype=torch.float64))
    shifted1 = torch.roll(gt, 1, dims=-1)
    shifted3 = torch.roll(gt, 3, dims=-1)
    s1, s3 = ssim(shifted1, gt), ssim(shifted3, gt)
    assert (s1 < 1).all() and (s3 < s1).all()
    noisy = (gt + 0.05 * _images(seed=9, h=48, w=48)).clamp(0, 1)
    assert (ssim(noisy, gt) < 1).all()


def test_ssim_differentiable():
    pred = _images(seed=5).float().requires_grad_(True)
    gt = _images(seed=6).float()
    (1 - ssim(pred, gt)).sum().backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_ssim_small_image_refused():
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(_images(h=8, w=8), _images(h=8, w=8))


# --------------------------------------------------------------------------------------------- flicker
def test_flicker_closed_form_and_dropped_frame():
    t = torch.arange(6, dtype=torch.float64).view(6, 1, 1, 1) * 0.1
    video = t.expand(6, 3, 8, 8).clone()            # every frame 0.1 brighter than the last
    assert abs(float(flicker(video)) - 0.1) < 1e-12
    static = video[:1].expand(6, 3, 8, 8)
    assert float(flicker(static)) == 0.0
    # a dropped frame (frame 3 repeated in place of 4) makes the clip jerkier: |0.2| after a 0 step
    dropped = video.clone()
    dropped[4] = dropped[3]
    assert abs(float(flicker(dropped)) - (0.1 * 3 + 0.0 + 0.2) / 5) < 1e-12
    batch = torch.stack([video, static])
    assert torch.allclose(flicker(batch), torch.tensor([0.1, 0.0], dtype=torch.float64))


def test_flicker_needs_two_frames():
    with pytest.raises(ValueError, match="at least 2 frames"):
        flicker(torch.zeros(1, 3, 4, 4))


# ------------------------------------------------------------------------------------------- silhouette
def test_silhouette_iou_rectangles():
    a = torch.zeros(3, 10, 10)
    b = torch.zeros(3, 10, 10)
    a[0, :, :5] = 1.0   # 50 px
    b[0, :, 3:8] = 1.0  # 50 px, overlap 20 px -> 20 / 80
    a[1] = 1.0
    b[1] = 1.0
    # item 2: both empty -> 1
    iou = silhouette_iou(a, b)
    assert torch.allclose(iou, torch.tensor([0.25, 1.0, 1.0]))
    b[2, 0, 0] = 1.0
    assert float(silhouette_iou(a, b)[2]) == 0.0


# ---------------------------------------------------------------------------------------------- Chamfer
def test_chamfer_matches_kdtree():
    cKDTree = pytest.importorskip("scipy.spatial").cKDTree
    rng = np.random.default_rng(0)
    a = rng.random((300, 3))
    b = rng.random((200, 3)) + 0.05
    ref = cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean()
    assert abs(float(chamfer_distance(torch.from_numpy(a), torch.from_numpy(b))) - ref) < 1e-5
    assert float(chamfer_distance(torch.from_numpy(a), torch.from_numpy(a))) == 0.0
    far = float(chamfer_distance(torch.from_numpy(a), torch.from_numpy(a + 0.2)))
    near = float(chamfer_distance(torch.from_numpy(a), torch.from_numpy(a + 0.01)))
    assert near < far


def test_chamfer_empty_refused():
    with pytest.raises(ValueError, match="empty"):
        chamfer_distance(torch.zeros(0, 3), torch.zeros(4, 3))


# ---------------------------------------------------------------------------------------------- Fréchet
def test_frechet_matches_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(1)
    d = 16
    a = rng.normal(size=(200, d)) @ rng.normal(size=(d, d)) * 0.3
    b = rng.normal(size=(150, d)) @ rng.normal(size=(d, d)) * 0.3 + 0.5
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s_a @ s_b).real
    ref = ((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean)
    assert abs(frechet_distance(a, b) - ref) < 1e-6 * max(1.0, abs(ref))
    assert abs(frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) - ref) < 1e-6 * max(1.0, abs(ref))


def test_frechet_identical_zero_and_mean_shift():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(100, 8))
    assert abs(frechet_distance(a, a)) < 1e-8
    shift = np.full(8, 0.5)
    assert abs(frechet_distance(a, a + shift) - (shift ** 2).sum()) < 1e-8


def test_frechet_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2 samples"):
        frechet_distance(np.zeros((1, 4)), np.zeros((5, 4)))

