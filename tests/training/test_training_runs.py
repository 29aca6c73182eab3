"""End-to-end training tests on a tiny dataset built with the data toolkit (see train_testkit.py):
each stage's loss falls on a fixed evaluation batch, the phase switch, masks on conditioning frames only,
the export loads and generates."""
import json

import numpy as np
import pytest
import torch

from train_testkit import read_log, tiny_config, tiny_dataset  # noqa: F401  (fixture)

from ss4d.training.config import TrainConfig
from ss4d.training.loop import train

OVERFIT = {  # stage: (steps, lr, batch, max ratio of final / initial eval loss)
    "ss_flow": (40, 2e-3, 2, 0.5),
    "slat_flow": (40, 5e-3, 1, 0.8),
    "slat_vae": (30, 3e-3, 1, 0.7),
    "ss_vae": (30, 5e-3, 1, 0.5),
}


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):  # noqa: F811
    """One short run per stage (2 frames, fixed eval batch at 0, half-way and the end), shared by the tests below."""
    root = tmp_path_factory.mktemp("runs")
    runs = {"data": tiny_dataset}
    for stage, (steps, lr, batch, _) in OVERFIT.items():
        raw = tiny_config(stage, phases=[{"frames": 2, "steps": steps, "batch_size": batch}], lr=lr,
                          eval_every=steps // 2, checkpoint_every=steps)
        runs[stage] = root / stage
        train(TrainConfig(raw), tiny_dataset, runs[stage], progress=False)
    return runs


@pytest.mark.parametrize("stage", list(OVERFIT))
def test_loss_falls_on_fixed_eval_batch(trained, stage):
    evals = [r for r in read_log(trained[stage]) if "eval_loss" in r]
    assert [r["step"] for r in evals] == [0, OVERFIT[stage][0] // 2, OVERFIT[stage][0]]
    first, last = evals[0]["eval_loss"], evals[-1]["eval_loss"]
    assert last < OVERFIT[stage][3] * first, (stage, first, last)
    if stage == "slat_vae":
        assert evals[-1]["eval_psnr"] > evals[0]["eval_psnr"] + 3.0      # +3 dB at least
        assert evals[-1]["eval_ssim"] < evals[0]["eval_ssim"]             # the 1 - SSIM term (zero padding) falls
    snaps = sorted(p.name for p in (trained[stage] / "snapshots").glob("*.png")) if stage != "ss_vae" else []
    if stage != "ss_vae":   # conditioning frames with their masks (flows) / renders over ground truth (VAE)
        assert snaps == [f"step_{s:07d}.png" for s in (0, OVERFIT[stage][0] // 2, OVERFIT[stage][0])]
    per_step = [r for r in read_log(trained[stage]) if "loss" in r]
    assert len(per_step) == OVERFIT[stage][0]
    for r in per_step:
        assert {"step", "frames", "loss", "lr", "grad_norm", "samples_per_s"} <= set(r)
        assert np.isfinite(r["loss"]) and r["frames"] == 2


def test_phase_switch_changes_frames_at_the_configured_step(tiny_dataset, tmp_path):  # noqa: F811
    raw = tiny_config("ss_flow", phases=[{"frames": 2, "steps": 2, "batch_size": 1},
                                         {"frames": 4, "steps": 2, "batch_size": 2, "micro_batches": 2},
                                         {"frames": 8, "steps": 1, "batch_size": 1}],
                      checkpoint_every=100, eval_every=0)
    raw["dataset"]["max_frame"] = 6
    with pytest.raises(Exception, match="shorter than phase 2's 8 frames"):
        train(TrainConfig(raw), tiny_dataset, tmp_path / "run", progress=False)
    log = read_log(tmp_path / "run")
    assert [(r["step"], r["frames"]) for r in log if "loss" in r] == [(1, 2), (2, 2), (3, 4), (4, 4)]
    phases = [r for r in log if "skipped_short_clips" in r]
    assert [(r["step"], r["frames"], r["clips"]) for r in phases] == [(0, 2, 2), (2, 4, 2)]


def test_masks_touch_only_conditioning_frames_and_are_reproducible(tiny_dataset):  # noqa: F811
    from ss4d.data.layout import FolderDataset
    from ss4d.training.stage import StageDataset
    from ss4d.training.stages import STAGES

    raw = tiny_config("ss_flow", phases=[{"frames": 4, "steps": 1, "batch_size": 1}])
    raw["conditioning"]["mask"] = {"clip_prob": 1.0, "frame_prob": 1.0, "min_size": 0.2, "max_size": 0.4}
    reader = FolderDataset(tiny_dataset)
    stage = STAGES["ss_flow"](TrainConfig(raw), reader)
    clips = stage.index.fitting(4)
    masked = StageDataset(stage, clips, 4, seed=0, rank=0)
    plain = StageDataset(stage, clips, 4, seed=0, rank=0, augment=False)
    a, b, p = masked[(7, 0, 0)], masked[(7, 0, 0)], plain[(7, 0, 0)]
    assert torch.equal(a["cond_images"], b["cond_images"])                 # same key -> same masks
    assert a["window"] == p["window"]
    assert torch.equal(a["x_0"], p["x_0"])                                 # targets never masked
    clip, frames = a["window"]
    raw_latents = np.stack([reader.load_ss_latent(clip, "ss_enc_tiny", t) for t in frames])
    assert np.array_equal(a["x_0"].numpy(), raw_latents)
    diff = a["cond_images"] != p["cond_images"]
    assert diff.any()
    assert (a["cond_images"][diff] == 0).all()                            # only blacked-out pixels differ
    other = masked[(8, 0, 0)]                                              # another step: other draws
    assert not torch.equal(other["cond_images"] == 0, a["cond_images"] == 0)


def test_exported_folder_loads_and_generates(trained, tmp_path):
    """The paper's export: the trained flows and 4D VAE decoder + the frozen SS decoder of a TRELLIS folder
    (``--base``; here the tiny random 3D folder, whose decoder is calibrated to a sparse occupancy)."""
    import ss4d
    from ss4d.data.layout import FolderDataset
    from ss4d.training.export import load_run_models, main
    from trellis_ext.models import from_pretrained
    from trellis_ext.pipelines.tiny import write_tiny_image_to_3d

    base = write_tiny_image_to_3d(str(tmp_path / "trellis3d"))
    out = tmp_path / "model"
    assert main(["--run", str(trained["ss_flow"]), "--run", str(trained["slat_vae"]), "--run", str(trained["slat_flow"]),
                 "--base", base, "--output", str(out), "--steps", "2"]) == 0
    pipe = ss4d.Pipeline.from_pretrained(out)
    # the folder holds the runs' EMA weights, the base's SS decoder and the SLat flow dataset's statistics
    for run, key, pipe_key in (("ss_flow", "denoiser", "sparse_structure_flow_model"),
                               ("slat_flow", "denoiser", "slat_flow_model"), ("slat_vae", "decoder", "slat_decoder_gs")):
        got = pipe.models[pipe_key].state_dict()
        for k, v in load_run_models(trained[run])[1][key].state_dict().items():
            assert torch.equal(got[k], v), (run, k)
    spec = json.loads((tmp_path / "trellis3d" / "pipeline.json").read_text())["args"]["models"]
    dec = from_pretrained(str(tmp_path / "trellis3d" / spec["sparse_structure_decoder"]))
    for k, v in dec.state_dict().items():
        assert torch.equal(pipe.models["sparse_structure_decoder"].state_dict()[k], v)
    stats = json.loads((trained["slat_flow"] / "stage.json").read_text())["slat_normalization"]
    assert pipe.slat_normalization == stats
    assert (out / "ckpts" / "slat_enc_4d.json").is_file()            # the trained encoder, for re-encoding
    reader = FolderDataset(trained["data"])
    clip_id = next(r["clip_id"] for r in reader.clip_records() if r["clip_id"].startswith("RiggedFigure__"))
    views = [reader.load_views(clip_id, t)[0][0] for t in range(2)]
    result = pipe.run(views, seed=0, progress=False)
    assert result.num_frames == 2 and all(n > 0 for n in result.voxels_per_frame)
    assert all(g.get_xyz.shape[0] == 4 * n for g, n in zip(result.gaussians, result.voxels_per_frame))  # 4 per voxel


def test_models_only_export_of_the_vae_runs(trained, tmp_path):
    from ss4d.training.export import load_run_models, main
    from trellis_ext.models import from_pretrained

    out = tmp_path / "enc"
    assert main(["--run", str(trained["ss_vae"]), "--output", str(out), "--models-only"]) == 0
    assert not (out / "pipeline.json").exists()
    _, models, _ = load_run_models(trained["ss_vae"])
    for key, stem in (("encoder", "ss_enc_conv3d"), ("decoder", "ss_dec_conv3d")):
        loaded = from_pretrained(str(out / "ckpts" / stem))
        for k, v in models[key].state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), k
    assert main(["--run", str(trained["ss_vae"]), "--output", str(tmp_path / "x")]) == 2   # no full pipeline


def test_init_from_trellis_inflates_and_the_ema_starts_there(tiny_dataset, tmp_path):  # noqa: F811
    """--init trellis:<folder> inflates the 3D structure flow; the EMA starts from the inflated weights (not a random
    init, TRELLIS's finetune bug), so after one step it is within (1 - rate) of them."""
    from safetensors.torch import load_file

    from ss4d.models.inflation import INFLATORS, load_inflation_config
    from trellis_ext.models import from_pretrained
    from trellis_ext.pipelines.tiny import write_tiny_image_to_3d
    from trellis_ext.training.checkpoint import latest_complete

    base = write_tiny_image_to_3d(str(tmp_path / "trellis3d"))
    stem = json.loads((tmp_path / "trellis3d" / "pipeline.json").read_text())["args"]["models"][
        "sparse_structure_flow_model"]
    inflated = INFLATORS["sparse_structure_flow_model"](
        from_pretrained(str(tmp_path / "trellis3d" / stem), use_fp16=False),
        **load_inflation_config()["sparse_structure_flow_model"]).state_dict()
    raw = tiny_config("ss_flow", phases=[{"frames": 2, "steps": 1, "batch_size": 1}], ema_rates=[0.99],
                      checkpoint_every=1, eval_every=0, lr=1e-2)
    raw["init"] = f"trellis:{base}"
    train(TrainConfig(raw), tiny_dataset, tmp_path / "run", progress=False)
    ck = latest_complete(tmp_path / "run" / "checkpoints")
    live, ema = load_file(str(ck / "model.safetensors")), load_file(str(ck / "ema.safetensors"))
    moved = max((live[f"models.denoiser.{k}"] - v).abs().max().item() for k, v in inflated.items())
    assert moved > 1e-3                                                       # the step changed the weights
    for k, v in inflated.items():
        assert torch.allclose(ema[f"models.denoiser.{k}"], 0.99 * v + 0.01 * live[f"models.denoiser.{k}"],
                              atol=1e-6), k
    assert json.loads((tmp_path / "run" / "models.json").read_text())["denoiser"]["name"] == \
        "SparseStructureFlow4DModel"
