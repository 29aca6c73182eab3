"""CLIP-S and FVD plumbing with random-weight networks (never numbers to report), and the Evaluator's
weights handling: computed with weights, ``null`` + reason without, an error when asked for explicitly."""
import numpy as np
import pytest
import torch

from ss4d.errors import MissingWeightsError
from ss4d.evaluation.fvd import I3D_KWARGS, I3D_SIZE, fvd_from_features, i3d_features, load_i3d
from ss4d.evaluation.metrics import frechet_distance
from ss4d.evaluation.scoring import Evaluator, summarize

TINY_CLIP = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                 patch_size=8, projection_dim=16)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.CLIPVisionConfig(**TINY_CLIP)
    path = tmp_path_factory.mktemp("weights") / "clip-vit-base-patch32"
    transformers.CLIPVisionModelWithProjection(cfg).save_pretrained(path)
    return path


class TinyI3D(torch.nn.Module):
    """Stand-in with the I3D TorchScript's call signature; returns pooled features plus input statistics,
    so the test can check what the network was fed."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 5)

    def forward(self, x: torch.Tensor, rescale: bool = True, resize: bool = True, return_features: bool = False):
        pooled = x.mean((2, 3, 4))
        extra = torch.stack([x.amin((1, 2, 3, 4)), x.amax((1, 2, 3, 4)), torch.full_like(pooled[:, 0], x.shape[-1]),
                             torch.full_like(pooled[:, 0], x.shape[2]),
                             torch.full_like(pooled[:, 0], float(rescale or resize or not return_features))], 1)
        return torch.cat([self.proj(pooled), extra], 1)


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("i3d") / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(TinyI3D()), str(path))
    return path


def test_clip_score_matches_direct_embedding(clip_dir):
    from transformers import CLIPVisionModelWithProjection

    from ss4d.evaluation.clip_score import CLIP_MEAN, CLIP_STD, clip_similarity, load_clip_encoder

    enc = load_clip_encoder(clip_dir)
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(3, 3, 32, 32, generator=g)   # already the model's input size: no resize
    pred = (gt + 0.3 * torch.randn(3, 3, 32, 32, generator=g)).clamp(0, 1)
    model = CLIPVisionModelWithProjection.from_pretrained(clip_dir).eval()
    norm = lambda x: (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)  # noqa: E731
    with torch.no_grad():
        ea = torch.nn.functional.normalize(model(pixel_values=norm(pred)).image_embeds, dim=-1)
        eb = torch.nn.functional.normalize(model(pixel_values=norm(gt)).image_embeds, dim=-1)
        ours = clip_similarity(enc, pred, gt)
    assert torch.allclose(ours, (ea * eb).sum(-1), atol=1e-5)
    assert torch.allclose(clip_similarity(enc, gt, gt), torch.ones(3), atol=1e-5)
    assert (ours < 1 - 1e-4).all()
    # larger images: shorter side resized to 32, centre crop
    big = torch.rand(2, 3, 64, 96, generator=g)
    assert enc.preprocess(big).shape == (2, 3, 32, 32)


def test_i3d_features_feed_the_torchscript_convention(i3d_file):
    model = load_i3d(i3d_file)
    videos = torch.rand(3, 8, 3, 40, 60)
    f = i3d_features(model, videos, batch_size=2)
    assert f.shape == (3, 10) and f.dtype == np.float64
    assert (f[:, 5] >= -1 - 1e-6).all() and (f[:, 6] <= 1 + 1e-6).all() and f[:, 5].min() < -0.5  # [-1, 1]
    assert (f[:, 7] == I3D_SIZE).all() and (f[:, 8] == 8).all()  # [N, 3, T, 224, 224]
    assert (f[:, 9] == 0).all() and I3D_KWARGS == {"rescale": False, "resize": False, "return_features": True}
    with pytest.raises(ValueError, match="at least 8 frames"):
        i3d_features(model, torch.rand(1, 4, 3, 16, 16))


def test_fvd_pooled_is_the_frechet_distance():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 4)), rng.normal(size=(6, 4)) + 1.0
    assert fvd_from_features(a, b) == frechet_distance(a, b)
    assert abs(fvd_from_features(a, a)) < 1e-9


def _view(t=8, size=32, seed=0):
    g = np.random.default_rng(seed)
    v = np.zeros((t, size, size, 4), np.float32)
    v[..., :3] = g.random((t, size, size, 3))
    v[:, 8:24, 8:24, 3] = 1.0
    return v


def test_evaluator_with_weights_computes_everything(tmp_path, clip_dir, i3d_file, monkeypatch):
    from ss4d.evaluation.lpips import load_lpips

    weights = clip_dir.parent
    (weights / "i3d_torchscript.pt").write_bytes(i3d_file.read_bytes())
    for net, name in (("vgg", "vgg16.pth"), ("alex", "alexnet.pth")):
        donor = load_lpips(net, allow_random=True, weights_folder=tmp_path / "none")
        torch.save({f"features.{k}": v for k, v in donor.features.state_dict().items()}, weights / name)
    ev = Evaluator.create("auto", weights_folder=weights)
    assert ev.skipped == {}
    gt = _view()
    views = {"a": ev.score_view(gt, gt), "b": ev.score_view(_view(seed=1), _view(seed=1))}
    s = summarize(views, ev)["metrics"]
    assert all(s[m]["status"] == "computed" for m in s), s
    assert abs(s["clip"]["value"] - 1) < 1e-5 and s["lpips_vgg"]["value"] < 1e-6 and s["iou"]["value"] == 1.0
    assert abs(s["fvd"]["value"]) < 1e-6 and s["fvd"]["clips"] == 2
    noisy = {k: ev.score_view(np.clip(v + 0.2 * (np.random.default_rng(3).random(v.shape) - 0.5), 0, 1), v)
             for k, v in (("a", gt), ("b", _view(seed=1)))}
    s2 = summarize(noisy, ev)["metrics"]
    assert s2["clip"]["value"] < 1 and s2["lpips_vgg"]["value"] > 0 and s2["psnr"]["value"] < s["psnr"]["value"]


def test_evaluator_without_weights_reports_null_or_refuses(tmp_path):
    ev = Evaluator.create("auto", weights_folder=tmp_path)
    assert set(ev.skipped) == {"lpips_vgg", "lpips_alex", "clip", "fvd"}
    gt = _view()
    s = summarize({"a": ev.score_view(gt, gt)}, ev)["metrics"]
    for m in ("lpips_vgg", "lpips_alex", "clip", "fvd"):
        assert s[m]["value"] is None and s[m]["status"] == "skipped" and "no weights" in s[m]["reason"]
    assert s["psnr"]["status"] == "computed"
    with pytest.raises(MissingWeightsError, match="VGG16"):
        Evaluator.create(["psnr", "lpips_vgg"], weights_folder=tmp_path)
