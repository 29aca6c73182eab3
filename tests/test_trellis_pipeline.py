"""End-to-end: our 3D pipeline reproduces the official TRELLIS tiny_pipeline run."""
import pytest
import torch
from safetensors.torch import load_file

from conftest import TRELLIS_FIXTURES, require_dir
from trellis_ext.pipelines import ImageTo3DPipeline
from trellis_ext.pipelines.samplers import FlowEulerGuidanceIntervalSampler, time_grid

E2E_ATOL = 1e-3


@pytest.fixture(scope="module")
def reference():
    folder = require_dir(TRELLIS_FIXTURES / "tiny_pipeline", "TRELLIS tiny_pipeline fixture")
    return folder, load_file(str(folder / "e2e_reference.safetensors"))


def test_time_grid_rescale():
    grid = time_grid(4, 3.0)
    assert grid[0][0] == pytest.approx(1.0) and grid[-1][1] == pytest.approx(0.0)
    # t' = s t / (1 + (s-1) t) at t = 0.5, s = 3 -> 0.75
    assert grid[1][1] == pytest.approx(0.75)


def test_guidance_interval_switches_cfg():
    calls = []

    def model(x, t, cond):
        calls.append(cond)
        return torch.zeros_like(x)

    s = FlowEulerGuidanceIntervalSampler()
    s.sample(model, torch.zeros(1, 2), torch.ones(1, 2), neg_cond=-torch.ones(1, 2), steps=4, rescale_t=1.0,
             cfg_strength=2.0, cfg_interval=(0.5, 1.0))
    # t = 1, 0.75, 0.5 are inside the interval (2 calls each), t = 0.25 is not (1 call)
    assert len(calls) == 3 * 2 + 1


def test_tiny_pipeline_end_to_end(reference):
    folder, ref = reference
    pipe = ImageTo3DPipeline.from_pretrained(str(folder))
    res = pipe.run(ref["cond"], ref["neg_cond"], seed=None, ss_noise=ref["ss.noise"],
                   slat_noise_feats=ref["slat.noise.feats"])
    for i in range(len(res.ss.pred_x_t)):
        torch.testing.assert_close(res.ss.pred_x_t[i], ref[f"ss.step{i}.pred_x_t"], atol=E2E_ATOL, rtol=E2E_ATOL)
        torch.testing.assert_close(res.ss.pred_x_0[i], ref[f"ss.step{i}.pred_x_0"], atol=E2E_ATOL, rtol=E2E_ATOL)
    torch.testing.assert_close(res.extras["ss_decoder_logits"], ref["ss.decoder_logits"], atol=E2E_ATOL, rtol=E2E_ATOL)
    assert torch.equal(res.coords, ref["coords"]), "voxel coords must match exactly"
    for i in range(len(res.slat_trajectory.pred_x_t)):
        torch.testing.assert_close(res.slat_trajectory.pred_x_t[i].feats, ref[f"slat.step{i}.pred_x_t.feats"],
                                   atol=E2E_ATOL, rtol=E2E_ATOL)
    torch.testing.assert_close(res.slat_trajectory.samples.feats, ref["slat.samples.feats"], atol=E2E_ATOL, rtol=E2E_ATOL)
    torch.testing.assert_close(res.slat.feats, ref["slat.denormalized.feats"], atol=E2E_ATOL, rtol=E2E_ATOL)
    g = res.gaussians[0]
    for attr in ("_xyz", "_features_dc", "_scaling", "_rotation", "_opacity"):
        torch.testing.assert_close(getattr(g, attr), ref[f"gaussians.0.{attr}"], atol=E2E_ATOL, rtol=E2E_ATOL)


def test_tiny_random_folder_runs_end_to_end(tmp_path):
    """A written tiny random folder loads strictly, samples, and its Gaussians survive a PLY round trip."""
    from trellis_ext.pipelines.tiny import TARGET_OCCUPANCY, TINY_COND_CHANNELS, TINY_COND_TOKENS, \
        write_tiny_image_to_3d
    from trellis_ext.representations import load_ply, save_ply

    folder = write_tiny_image_to_3d(str(tmp_path / "tiny3d"))
    pipe = ImageTo3DPipeline.from_pretrained(folder)
    cond = torch.randn(1, TINY_COND_TOKENS, TINY_COND_CHANNELS)
    res = pipe.run(cond, seed=0)
    grid = pipe.models["slat_flow_model"].resolution ** 3
    assert 0 < res.coords.shape[0] < 4 * TARGET_OCCUPANCY * grid, "calibrated occupancy far off target"
    g = res.gaussians[0]
    assert len(g) == 32 * res.coords.shape[0]
    save_ply(g, tmp_path / "g.ply")
    back = load_ply(tmp_path / "g.ply")
    torch.testing.assert_close(back.get_xyz, g.get_xyz, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(back.get_opacity, g.get_opacity, atol=1e-5, rtol=1e-5)
