"""LPIPS without torchvision: random-weight plumbing against a hand-written reference of lpips v0.1."""
import pytest
import torch
import torch.nn.functional as F

from ss4d.errors import InputError, MissingWeightsError
from ss4d.evaluation.lpips import LPIPS, load_lpips, lpips_heads_path

# the lpips package's layer taps, written out independently: (kind, torchvision index) per layer
VGG_TAPS = (3, 8, 15, 22, 29)
ALEX_TAPS = (1, 4, 7, 9, 11)


def _reference_lpips(model: LPIPS, x0, x1, taps):
    """LPIPS v0.1 written directly on the state dict: scaling, features, unit-normalise, heads, mean, sum."""
    sd = model.state_dict()
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)  # lpips v0.1 ScalingLayer
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def feats(x):
        h = ((x * 2 - 1) - shift) / scale
        outs = []
        for i, layer in enumerate(model.features):
            if isinstance(layer, torch.nn.Conv2d):
                h = F.conv2d(h, sd[f"features.{i}.weight"], sd[f"features.{i}.bias"], stride=layer.stride,
                             padding=layer.padding)
            elif isinstance(layer, torch.nn.ReLU):
                h = h.clamp_min(0)
            else:
                h = F.max_pool2d(h, layer.kernel_size, layer.stride)
            if i in taps:
                norm = torch.sqrt(torch.sum(h ** 2, dim=1, keepdim=True))
                outs.append(h / (norm + 1e-10))
        return outs

    total = 0
    for k, (a, b) in enumerate(zip(feats(x0), feats(x1))):
        w = sd[f"heads.{k}.weight"]
        total = total + (((a - b) ** 2) * w.view(1, -1, 1, 1)).sum(1).mean((1, 2))
    return total


def _pair(seed=0, size=64):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(2, 3, size, size, generator=g)
    return gt, (gt + 0.1 * torch.randn(2, 3, size, size, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("net,taps", [("vgg", VGG_TAPS), ("alex", ALEX_TAPS)])
def test_lpips_random_weights_match_reference(net, taps, monkeypatch, tmp_path):
    monkeypatch.setenv("SS4D_EVAL_WEIGHTS", str(tmp_path))  # empty folder: no backbone
    model = load_lpips(net, allow_random=True)
    gt, pred = _pair()
    out = model(pred, gt)
    assert out.shape == (2,)
    assert torch.allclose(out, _reference_lpips(model, pred, gt, taps), rtol=1e-4, atol=1e-6)
    assert torch.allclose(model(gt, gt), torch.zeros(2))


def test_lpips_perturbation_order_and_gradient(monkeypatch, tmp_path):
    monkeypatch.setenv("SS4D_EVAL_WEIGHTS", str(tmp_path))
    model = load_lpips("vgg", allow_random=True)
    g = torch.Generator().manual_seed(1)
    gt = torch.rand(1, 3, 64, 64, generator=g)
    noise = torch.randn(1, 3, 64, 64, generator=g)
    small = model((gt + 0.02 * noise).clamp(0, 1), gt)
    large = model((gt + 0.2 * noise).clamp(0, 1), gt)
    assert 0 < float(small) < float(large)
    pred = (gt + 0.1 * noise).clamp(0, 1).requires_grad_(True)
    model(pred, gt).sum().backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in model.parameters())


def test_lpips_loads_torchvision_state_dict(monkeypatch, tmp_path):
    """A torchvision-style file (``features.*`` + ``classifier.*``) loads through the flag and the env var."""
    monkeypatch.setenv("SS4D_EVAL_WEIGHTS", str(tmp_path / "none"))
    donor = load_lpips("alex", allow_random=True, seed=7)
    sd = {f"features.{k}": v for k, v in donor.features.state_dict().items()}
    sd["classifier.1.weight"] = torch.zeros(4, 9216)
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(sd, path)
    gt, pred = _pair(2)
    loaded = load_lpips("alex", backbone_weights=path)
    assert torch.allclose(loaded(pred, gt), donor(pred, gt))
    monkeypatch.setenv("SS4D_ALEXNET_WEIGHTS", str(path))
    assert torch.allclose(load_lpips("alex")(pred, gt), donor(pred, gt))
    monkeypatch.delenv("SS4D_ALEXNET_WEIGHTS")
    monkeypatch.setenv("SS4D_EVAL_WEIGHTS", str(tmp_path))  # found in the weights folder by its file name
    assert torch.allclose(load_lpips("alex")(pred, gt), donor(pred, gt))


def test_lpips_missing_and_wrong_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("SS4D_EVAL_WEIGHTS", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="VGG16.*not found.*SS4D_VGG16_WEIGHTS"):
        load_lpips("vgg")
    with pytest.raises(MissingWeightsError, match="not found"):
        load_lpips("vgg", backbone_weights=tmp_path / "nope.pth", allow_random=True)
    assert issubclass(MissingWeightsError, InputError)
    bad = tmp_path / "vgg16.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(InputError, match="features"):
        load_lpips("vgg")
    with pytest.raises(InputError, match="unknown LPIPS network"):
        load_lpips("squeeze")


def test_shipped_heads_are_the_lpips_v01_heads():
    path = lpips_heads_path("vgg")
    if path is None:
        pytest.skip("torchmetrics (eval extra) not installed: no shipped LPIPS heads")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    shapes = sorted(tuple(v.shape) for v in sd.values())
    assert shapes == sorted([(1, c, 1, 1) for c in (64, 128, 256, 512, 512)])
    assert all((v >= 0).all() for v in sd.values())  # lpips clamps its heads non-negative
