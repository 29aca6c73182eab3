"""Gaussian representation: TRELLIS fixture reproduction, activations, offset perturbation, PLY I/O."""
import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TRELLIS_FIXTURES, require_dir
from trellis_ext.representations import (
    PLY_PROPERTY_NAMES,
    TRELLIS_PLY_TRANSFORM,
    Gaussian,
    PlyFormatError,
    compute_offset_perturbation,
    gaussians_from_voxel_output,
    hammersley_sequence,
    load_ply,
    matrix_to_quaternion,
    quaternion_to_matrix,
    save_ply,
    voxel_output_layout,
)

FIXTURE = TRELLIS_FIXTURES / "tiny" / "slat_dec_gs"
ATTRS = ("_xyz", "_features_dc", "_scaling", "_rotation", "_opacity",
         "get_xyz", "get_features", "get_scaling", "get_rotation", "get_opacity")
FIXTURE_ATOL = 1e-5


def _load(name):
    from safetensors.torch import load_file
    return load_file(str(require_dir(FIXTURE, "TRELLIS slat_dec_gs fixture") / name))


def random_gaussian(n=200, seed=0, **kwargs) -> Gaussian:
    gen = torch.Generator().manual_seed(seed)
    g = Gaussian(**kwargs)
    g._xyz = torch.rand(n, 3, generator=gen)
    g._features_dc = torch.randn(n, 1, 3, generator=gen)
    g._scaling = torch.randn(n, 3, generator=gen) * 2
    g._rotation = torch.randn(n, 4, generator=gen)
    g._opacity = torch.randn(n, 1, generator=gen) * 3
    return g


# ---------------------------------------------------------------- TRELLIS fixture

def test_offset_perturbation_matches_checkpoint_buffer():
    buffer = _load("model.safetensors")["offset_perturbation"]
    cfg = json.loads((FIXTURE / "model.json").read_text())["args"]["representation_config"]
    ours = compute_offset_perturbation(cfg["num_gaussians"], cfg["voxel_size"])
    assert ours.shape == buffer.shape == (32, 3) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, buffer, atol=0, rtol=0)


def test_hammersley_definition():
    # coordinate 0 = i / n, then radical inverses in bases 2 and 3
    assert hammersley_sequence(3, 0, 32) == [0.0, 0.0, 0.0]
    assert hammersley_sequence(3, 1, 32) == [1 / 32, 0.5, 1 / 3]
    assert hammersley_sequence(3, 6, 32) == pytest.approx([6 / 32, 0.375, 2 / 9])  # 6 = 110b = 20 (base 3)


def test_voxel_output_layout_is_448_channels():
    layout = voxel_output_layout(32)
    assert layout["_xyz"] == (0, 96, 3) and layout["_features_dc"] == (96, 192, 3)
    assert layout["_scaling"] == (192, 288, 3) and layout["_rotation"] == (288, 416, 4)
    assert layout["_opacity"] == (416, 448, 1)


@pytest.mark.parametrize("batch", [0, 1])
def test_decoder_head_reproduces_trellis_fixture(batch):
    """out_layer.feats + input coords -> every raw and activated tensor TRELLIS produced."""
    model = json.loads((require_dir(FIXTURE, "fixture") / "model.json").read_text())["args"]
    inputs, inter, outputs = _load("inputs.safetensors"), _load("intermediates.safetensors"), _load("outputs.safetensors")
    coords, feats = inputs["x.coords"], inter["out_layer.feats"]
    assert torch.equal(inter["out_layer.coords"], coords)
    rows = coords[:, 0] == batch
    g = gaussians_from_voxel_output(feats[rows], coords[rows, 1:], model["resolution"],
                                    model["representation_config"],
                                    _load("model.safetensors")["offset_perturbation"])
    assert g.num_gaussians == 32 * int(rows.sum())
    for attr in ATTRS:
        ref = outputs[f"gaussians.{batch}.{attr}"]
        ours = getattr(g, attr)
        assert ours.shape == ref.shape, attr
        torch.testing.assert_close(ours, ref, atol=FIXTURE_ATOL, rtol=0, msg=attr)


def test_decoder_head_computes_perturbation_when_not_given():
    model = json.loads((require_dir(FIXTURE, "fixture") / "model.json").read_text())["args"]
    inputs, inter, outputs = _load("inputs.safetensors"), _load("intermediates.safetensors"), _load("outputs.safetensors")
    rows = inputs["x.coords"][:, 0] == 0
    g = gaussians_from_voxel_output(inter["out_layer.feats"][rows], inputs["x.coords"][rows, 1:],
                                    model["resolution"], model["representation_config"])
    torch.testing.assert_close(g.get_xyz, outputs["gaussians.0.get_xyz"], atol=FIXTURE_ATOL, rtol=0)


def test_decoder_head_zero_output_spreads_gaussians_inside_voxel():
    g = gaussians_from_voxel_output(torch.zeros(1, 448), torch.tensor([[3, 4, 5]]), 8)
    local = g._xyz * 8 - torch.tensor([3.5, 4.5, 5.5])          # offset in voxel units
    hammersley = torch.tensor([hammersley_sequence(3, i, 32) for i in range(32)])
    torch.testing.assert_close(local, hammersley - 0.5, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="448"):
        gaussians_from_voxel_output(torch.zeros(1, 447), torch.zeros(1, 3), 8)


# ---------------------------------------------------------------- activations

def test_activations_match_formulas():
    g = random_gaussian(aabb=(-1.0, 0.0, 2.0, 2.0, 3.0, 4.0))
    torch.testing.assert_close(g.get_xyz, g._xyz * torch.tensor([2.0, 3.0, 4.0]) + torch.tensor([-1.0, 0.0, 2.0]))
    inv_sp = math.log(math.expm1(4e-3))
    expected = torch.sqrt(F.softplus(g._scaling + inv_sp) ** 2 + 9e-4 ** 2)
    torch.testing.assert_close(g.get_scaling, expected)
    torch.testing.assert_close(g.get_opacity, torch.sigmoid(g._opacity + math.log(0.1 / 0.9)))
    torch.testing.assert_close(g.get_rotation, F.normalize(g._rotation + torch.tensor([1.0, 0, 0, 0]), dim=-1))
    assert g.get_features is g._features_dc
    assert (g.get_scaling >= 9e-4).all()
    assert g.device.type == "cpu" and g.aabb.device.type == "cpu"


def test_exp_activation_and_setters_invert_getters():
    for kind in ("softplus", "exp"):
        g = random_gaussian(scaling_activation=kind)
        h = Gaussian(scaling_activation=kind)
        h.from_xyz(g.get_xyz)
        h.from_features(g.get_features)
        h.from_scaling(g.get_scaling)
        h.from_rotation(g.get_rotation)
        h.from_opacity(g.get_opacity)
        for attr in ("get_xyz", "get_features", "get_scaling", "get_rotation", "get_opacity"):
            torch.testing.assert_close(getattr(h, attr), getattr(g, attr), atol=2e-5, rtol=1e-4, msg=attr)
    with pytest.raises(ValueError):
        Gaussian(scaling_activation="relu")
    with pytest.raises(NotImplementedError):
        Gaussian(sh_degree=3)


def test_covariance_is_rotated_scales():
    g = random_gaussian(n=5)
    cov = g.get_covariance()
    rot = quaternion_to_matrix(g.get_rotation)
    for i in range(5):
        expected = rot[i] @ torch.diag(g.get_scaling[i] ** 2) @ rot[i].T
        torch.testing.assert_close(cov[i], expected, atol=1e-8, rtol=1e-5)


def test_quaternion_matrix_round_trip():
    q = F.normalize(torch.randn(500, 4, dtype=torch.float64), dim=-1)
    q = torch.where(q[:, :1] < 0, -q, q)
    m = quaternion_to_matrix(q)
    torch.testing.assert_close(m @ m.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(500, 3, 3))
    torch.testing.assert_close(matrix_to_quaternion(m), q)
    # 180-degree rotations (w = 0) are the hard case for the trace-based formula
    flips = torch.eye(4, dtype=torch.float64)[1:]
    torch.testing.assert_close(matrix_to_quaternion(quaternion_to_matrix(flips)), flips)


# ---------------------------------------------------------------- PLY

def _same_rotation(a, b):
    return torch.allclose(quaternion_to_matrix(a), quaternion_to_matrix(b), atol=1e-5)


@pytest.mark.parametrize("transform", [TRELLIS_PLY_TRANSFORM, None])
def test_ply_round_trip(tmp_path, transform):
    g = random_gaussian(n=300)
    path = tmp_path / "g.ply"
    save_ply(g, path, transform=transform)
    h = load_ply(path, transform=transform)
    assert h.num_gaussians == 300 and h._xyz.dtype == torch.float32
    torch.testing.assert_close(h.get_xyz, g.get_xyz, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(h.get_features, g.get_features)
    torch.testing.assert_close(h.get_scaling, g.get_scaling, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(h.get_opacity, g.get_opacity, atol=1e-6, rtol=1e-5)
    assert _same_rotation(h.get_rotation, g.get_rotation)
    # method form (TRELLIS API) gives the same
    g.save_ply(tmp_path / "m.ply")
    h2 = Gaussian()
    h2.load_ply(tmp_path / "m.ply")
    torch.testing.assert_close(h2.get_xyz, g.get_xyz, atol=1e-6, rtol=1e-5)


def test_ply_header_layout(tmp_path):
    save_ply(random_gaussian(n=7), tmp_path / "g.ply")
    raw = (tmp_path / "g.ply").read_bytes()
    header = raw[: raw.index(b"end_header\n") + len(b"end_header\n")].decode("ascii").splitlines()
    assert header[0] == "ply" and header[1] == "format binary_little_endian 1.0"
    assert "element vertex 7" in header
    props = [line.split() for line in header if line.startswith("property")]
    assert [p[2] for p in props] == list(PLY_PROPERTY_NAMES)
    assert all(p[1] == "float" for p in props)
    assert len(raw) - len("\n".join(header)) - 1 == 7 * 17 * 4
    assert not [p for p in os.listdir(tmp_path) if p != "g.ply"], "temporary file left behind"


def test_ply_stores_activated_values_in_trellis_frame(tmp_path):
    from plyfile import PlyData
    g = Gaussian()
    g.from_xyz(torch.tensor([[0.1, 0.2, 0.3]]))
    g.from_features(torch.tensor([[[0.5, -0.5, 1.0]]]))
    g.from_scaling(torch.tensor([[0.01, 0.02, 0.2]]))      # long along the object's z axis
    g.from_rotation(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    g.from_opacity(torch.tensor([[0.7]]))
    save_ply(g, tmp_path / "y.ply")                          # TRELLIS default transform
    save_ply(g, tmp_path / "z.ply", transform=None)
    v = PlyData.read(str(tmp_path / "y.ply"))["vertex"]
    assert (float(v["x"][0]), float(v["y"][0]), float(v["z"][0])) == pytest.approx((0.1, -0.3, 0.2), abs=1e-6)
    assert float(v["opacity"][0]) == pytest.approx(math.log(0.7 / 0.3), abs=1e-5)
    assert float(v["scale_2"][0]) == pytest.approx(math.log(0.2), abs=1e-5)
    assert [float(v[f"f_dc_{i}"][0]) for i in range(3)] == pytest.approx([0.5, -0.5, 1.0])
    q = torch.tensor([[float(v[f"rot_{i}"][0]) for i in range(4)]])
    assert float(q.norm()) == pytest.approx(1.0, abs=1e-6)
    long_axis = quaternion_to_matrix(q)[0] @ torch.tensor([0.0, 0.0, 1.0])
    torch.testing.assert_close(long_axis.abs(), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    vz = PlyData.read(str(tmp_path / "z.ply"))["vertex"]
    assert (float(vz["x"][0]), float(vz["y"][0]), float(vz["z"][0])) == pytest.approx((0.1, 0.2, 0.3), abs=1e-6)
    # loading with the wrong transform gives the rotated object: the option is honoured
    rotated = load_ply(tmp_path / "y.ply", transform=None)
    torch.testing.assert_close(rotated.get_xyz, torch.tensor([[0.1, -0.3, 0.2]]), atol=1e-6, rtol=0)


def test_ply_errors(tmp_path):
    from plyfile import PlyData, PlyElement
    with pytest.raises(FileNotFoundError):
        load_ply(tmp_path / "missing.ply")
    (tmp_path / "junk.ply").write_bytes(b"this is not a ply file\n")
    with pytest.raises(PlyFormatError, match="not a readable PLY"):
        load_ply(tmp_path / "junk.ply")
    partial = np.zeros(3, dtype=[(n, "<f4") for n in PLY_PROPERTY_NAMES if n != "opacity"])
    PlyData([PlyElement.describe(partial, "vertex")]).write(str(tmp_path / "partial.ply"))
    with pytest.raises(PlyFormatError, match="opacity"):
        load_ply(tmp_path / "partial.ply")
    faces = np.zeros(2, dtype=[("a", "<f4")])
    PlyData([PlyElement.describe(faces, "face")]).write(str(tmp_path / "faces.ply"))
    with pytest.raises(PlyFormatError, match="vertex"):
        load_ply(tmp_path / "faces.ply")
    zero_rot = np.zeros(2, dtype=[(n, "<f4") for n in PLY_PROPERTY_NAMES])
    PlyData([PlyElement.describe(zero_rot, "vertex")]).write(str(tmp_path / "zero.ply"))
    with pytest.raises(PlyFormatError, match="quaternion"):
        load_ply(tmp_path / "zero.ply")
    with pytest.raises(ValueError, match="rotation"):
        save_ply(random_gaussian(n=2), tmp_path / "bad.ply", transform=[[1, 0, 0], [0, 1, 0], [0, 0, -1]])
