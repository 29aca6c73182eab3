"""SS4D's recipe in miniature: 3D pretraining (TRELLIS's classes per frame, ``ss4d.models.per_frame``) on
single frames -> ``--init inflate:RUN`` -> 4D fine-tuning; the 3D runs exported as the per-frame baseline."""
import json

import numpy as np
import pytest
import torch

from train_testkit import tiny_config, tiny_dataset  # noqa: F401  (fixture)

from ss4d.training.config import TrainConfig
from ss4d.training.errors import TrainingInputError
from ss4d.training.loop import train

#: the 4D-only args of the tiny configs (a TRELLIS class takes the rest)
FOUR_D_ARGS = ("expand_self_attn", "conv_type", "num_io_res4d_blocks", "io_block_channels_t", "window_size")
PER_FRAME = {"denoiser": {"ss_flow": "SparseStructureFlowPerFrame", "slat_flow": "SLatFlowPerFrame"},
             "encoder": {"slat_vae": "SLatEncoderPerFrame"}, "decoder": {"slat_vae": "SLatGaussianDecoderPerFrame"}}


def config_3d(stage: str, steps: int = 2, batch: int = 2, **trainer) -> dict:
    """The tiny config of ``stage`` with its models as per-frame TRELLIS classes and one single-frame phase."""
    raw = tiny_config(stage, phases=[{"frames": 1, "steps": steps, "batch_size": batch}], eval_every=0,
                      checkpoint_every=steps, **trainer)
    for key, spec in raw["models"].items():
        spec["name"] = PER_FRAME[key][stage]
        spec["args"] = {k: v for k, v in spec["args"].items() if k not in FOUR_D_ARGS}
        if spec["args"].get("pe_mode") == "rope_t":
            spec["args"]["pe_mode"] = "ape"
    return raw


@pytest.fixture(scope="module")
def runs_3d(tiny_dataset, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("runs3d")
    out = {}
    for stage in ("ss_flow", "slat_vae", "slat_flow"):
        out[stage] = root / stage
        train(TrainConfig(config_3d(stage, batch=1 if stage == "slat_vae" else 2)), tiny_dataset, out[stage],
              progress=False)
    return out


def test_3d_pretraining_runs_on_single_frames_with_trellis_classes(runs_3d):
    for stage, run in runs_3d.items():
        names = {k: v["name"] for k, v in json.loads((run / "models.json").read_text()).items()}
        assert set(names.values()) <= {n for d in PER_FRAME.values() for n in d.values()}, names
        log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if '"loss"' in x]
        assert [r["frames"] for r in log] == [1, 1] and all(np.isfinite(r["loss"]) for r in log)


def test_inflate_init_starts_the_4d_model_from_the_3d_run(runs_3d, tiny_dataset, tmp_path):  # noqa: F811
    """--init inflate:RUN: the 4D model holds every weight of the 3D run (its live weights at the newest checkpoint)
    plus identity-initialised temporal parts, and the EMA starts there."""
    from safetensors.torch import load_file

    from ss4d.models.inflation import INFLATORS, load_inflation_config
    from ss4d.training.init import _from_run
    from ss4d.data.layout import open_dataset
    from ss4d.training.stages import STAGES
    from trellis_ext.training.checkpoint import latest_complete

    raw = tiny_config("slat_flow", phases=[{"frames": 2, "steps": 1, "batch_size": 1}], ema_rates=[0.99],
                      checkpoint_every=1, eval_every=0, lr=1e-2)
    raw["init"] = f"inflate:{runs_3d['slat_flow']}"
    cfg = TrainConfig(raw)
    stage = STAGES["slat_flow"](cfg, open_dataset(tiny_dataset))
    three_d = _from_run(stage, runs_3d["slat_flow"])["denoiser"]
    inflated = INFLATORS["slat_flow_model"](three_d, **load_inflation_config()["slat_flow_model"]).state_dict()
    train(cfg, tiny_dataset, tmp_path / "run", progress=False)
    assert json.loads((tmp_path / "run" / "models.json").read_text())["denoiser"]["name"] == "SLatFlow4DModel"
    ck = latest_complete(tmp_path / "run" / "checkpoints")
    live, ema = load_file(str(ck / "model.safetensors")), load_file(str(ck / "ema.safetensors"))
    for k, v in three_d.state_dict().items():     # every 3D weight carried over; the EMA starts from it
        assert torch.equal(inflated[k], v), k
        assert torch.allclose(ema[f"models.denoiser.{k}"], 0.99 * v + 0.01 * live[f"models.denoiser.{k}"],
                              atol=1e-6), k
    new = [k for k in inflated if k not in three_d.state_dict()]
    assert new and all(k.startswith(("input_blocks_t.", "out_blocks_t.")) for k in new)


def test_inflate_needs_a_3d_run_and_4d_slat_flows_need_even_frames(runs_3d, tiny_dataset, tmp_path):  # noqa: F811
    raw = tiny_config("slat_flow", phases=[{"frames": 2, "steps": 1, "batch_size": 1}], eval_every=0)
    raw["init"] = f"inflate:{runs_3d['slat_flow']}"
    train(TrainConfig(raw), tiny_dataset, tmp_path / "four_d", progress=False)
    raw["init"] = f"inflate:{tmp_path / 'four_d'}"                         # a 4D run: nothing to inflate
    with pytest.raises(TrainingInputError, match="no 3D"):
        train(TrainConfig(raw), tiny_dataset, tmp_path / "again", progress=False)
    raw = tiny_config("slat_flow", phases=[{"frames": 1, "steps": 1, "batch_size": 1}], eval_every=0)
    raw["init"] = f"run:{tmp_path / 'four_d'}"                             # config says per-frame? no: 4D weights
    with pytest.raises(TrainingInputError, match="even"):
        train(TrainConfig(raw), tiny_dataset, tmp_path / "odd", progress=False)


def test_3d_runs_export_as_the_per_frame_baseline(runs_3d, tmp_path):
    """The 3D runs export to ckpts/*_3d; the SS4D pipeline loads them and every frame is generated alone:
    changing the colours of the last frame (same silhouette, so the same crop) leaves the other frames' Gaussians
    bit for bit unchanged."""
    import ss4d
    from ss4d.training.export import main
    from trellis_ext.pipelines.tiny import write_tiny_image_to_3d

    base = write_tiny_image_to_3d(str(tmp_path / "trellis3d"))
    out = tmp_path / "per_frame"
    assert main(["--run", str(runs_3d["ss_flow"]), "--run", str(runs_3d["slat_vae"]), "--run",
                 str(runs_3d["slat_flow"]), "--base", base, "--output", str(out), "--steps", "2"]) == 0
    stems = json.loads((out / "pipeline.json").read_text())["args"]["models"]
    assert stems["sparse_structure_flow_model"] == "ckpts/ss_flow_video_3d"
    assert stems["slat_flow_model"] == "ckpts/slat_flow_video_3d" and stems["slat_decoder_gs"] == "ckpts/slat_dec_gs_3d"
    assert (out / "ckpts" / "slat_enc_3d.json").is_file()
    pipe = ss4d.Pipeline.from_pretrained(out)
    assert type(pipe.models["slat_flow_model"]).__name__ == "SLatFlowPerFrame"
    g = np.random.default_rng(0)
    frames = []
    for _ in range(4):
        img = np.zeros((64, 64, 4), np.uint8)
        img[16:48, 20:44, :3] = g.integers(0, 255, (32, 24, 3))
        img[16:48, 20:44, 3] = 255
        frames.append(img)
    recoloured = [f.copy() for f in frames]
    recoloured[3][16:48, 20:44, :3] = 255 - recoloured[3][16:48, 20:44, :3]
    a = pipe.run(frames, seed=0, progress=False)
    b = pipe.run(recoloured, seed=0, progress=False)
    assert a.voxels_per_frame[:3] == b.voxels_per_frame[:3] and min(a.voxels_per_frame) > 0
    for ga, gb in zip(a.gaussians[:3], b.gaussians[:3]):
        assert torch.equal(ga.get_xyz, gb.get_xyz) and torch.equal(ga.get_features, gb.get_features)
