"""``conditioning.train_encoder``: the condition encoder trains with the flow (optimizer, EMA and checkpoints hold it,
exact resume after SIGKILL), a later run conditions on it frozen (``conditioning.encoder: run:<dir>``), the export
carries it, and every misuse is one clear line."""
import numpy as np
import pytest
import torch

from train_testkit import run_cli, step_losses, tiny_config, tiny_dataset, write_config  # noqa: F401

from ss4d.conditioning.dinov2 import UNUSED_BY_TOKENS, load_dinov2
from ss4d.training.cond_encoder import COND_ENCODER_KEY, trains_encoder
from ss4d.training.errors import TrainingInputError

PHASES = [{"frames": 2, "steps": 3, "batch_size": 2}, {"frames": 4, "steps": 4, "batch_size": 1}]   # 7 steps
LAST = "checkpoints/step_0000007"
PREFIX = COND_ENCODER_KEY + ".model."


def _config(tmp_path, name, stage="ss_flow", phases=PHASES, **conditioning):
    raw = tiny_config(stage, phases=phases, checkpoint_every=3, eval_every=0)
    raw.setdefault("conditioning", {}).update(conditioning)
    return write_config(tmp_path / f"{name}.json", raw)


def _train(cfg, data, out, *extra, env=None):
    return run_cli(["--config", cfg, "--data", data, "--output", out, "--no-progress", *extra], env=env)


def _load(path):
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture(scope="module")
def runs(tiny_dataset, tmp_path_factory):  # noqa: F811
    """The tiny structure flow with its encoder trained (``trained``) and frozen (``frozen``), 7 steps each."""
    root = tmp_path_factory.mktemp("cond_encoder")
    out = {"data": tiny_dataset, "root": root}
    for name, train in (("trained", True), ("frozen", False)):
        cfg = _config(root, name, train_encoder=train)
        assert _train(cfg, tiny_dataset, root / name).returncode == 0
        out[name], out[f"{name}_cfg"] = root / name, cfg
    return out


def _encoder_from_ema(run):
    """The run's starting encoder (tiny-random) with its EMA encoder weights, read by hand from ema.safetensors."""
    enc = load_dinov2("tiny-random")
    state = {k[len(PREFIX):]: v for k, v in _load(run / LAST / "ema.safetensors").items() if k.startswith(PREFIX)}
    enc.model.load_state_dict(state, strict=True)
    return enc


def test_the_encoder_trains_with_the_flow_and_a_killed_run_resumes_bit_for_bit(runs, tmp_path):
    fresh = load_dinov2("tiny-random").model.state_dict()
    trained = _load(runs["trained"] / LAST / "model.safetensors")
    enc = {k[len(PREFIX):]: v for k, v in trained.items() if k.startswith(PREFIX)}
    assert sorted(enc) == sorted(fresh)
    for k, v in fresh.items():                     # every parameter the tokens use moved; the unused ones did not
        assert torch.equal(enc[k], v) == k.startswith(UNUSED_BY_TOKENS), k
    assert not any(k.startswith(COND_ENCODER_KEY) for k in _load(runs["frozen"] / LAST / "model.safetensors"))
    # same start, so the same first loss; the trained encoder then changes the flow's path
    trained_losses, frozen_losses = step_losses(runs["trained"]), step_losses(runs["frozen"])
    assert trained_losses[1] == frozen_losses[1] and trained_losses[7] != frozen_losses[7]

    killed = _train(runs["trained_cfg"], runs["data"], tmp_path / "run", env={"SS4D_TRAIN_KILL_AT": "step:5"})
    assert killed.returncode == -9                 # saved at step 3, killed after 5
    assert _train(runs["trained_cfg"], runs["data"], tmp_path / "run").returncode == 0
    assert step_losses(tmp_path / "run") == trained_losses
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = _load(runs["trained"] / LAST / name), _load(tmp_path / "run" / LAST / name)
        assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a), name


def test_a_later_run_conditions_on_it_and_the_export_carries_it(runs, tmp_path, capsys):
    import ss4d
    from ss4d.data.layout import FolderDataset
    from ss4d.training.data import Window, conditioning_frames
    from ss4d.training.export import main as export_main
    from ss4d.training.masking import MaskConfig
    from trellis_ext.pipelines.tiny import write_tiny_image_to_3d

    data, trained = runs["data"], runs["trained"]
    one_phase = [{"frames": 2, "steps": 3, "batch_size": 1}]
    slat_flow = _config(tmp_path, "slat_flow", "slat_flow", one_phase, encoder=f"run:{trained}")
    slat_vae = _config(tmp_path, "slat_vae", "slat_vae", one_phase)
    for cfg, name in ((slat_flow, "slat_flow"), (slat_vae, "slat_vae")):
        assert _train(cfg, data, tmp_path / name).returncode == 0
    assert not any(k.startswith(COND_ENCODER_KEY) for k in _load(tmp_path / "slat_flow" / "checkpoints" /
                                                                  "step_0000003" / "model.safetensors"))  # frozen
    base = write_tiny_image_to_3d(str(tmp_path / "trellis3d"))
    out = tmp_path / "model"
    assert export_main(["--run", str(trained), "--run", str(tmp_path / "slat_vae"), "--run",
                        str(tmp_path / "slat_flow"), "--base", base, "--output", str(out), "--steps", "2"]) == 0
    assert (out / "image_cond_model" / "config.json").is_file()
    reader = FolderDataset(data)
    clip = next(r["clip_id"] for r in reader.clip_records() if r.get("status") == "ok")
    images = conditioning_frames(reader, Window(clip, [0, 1]), "renders", MaskConfig(), np.random.default_rng(0),
                                 augment=False)
    got = ss4d.Pipeline.from_pretrained(out).image_cond_model.encode(images)
    assert torch.equal(got, _encoder_from_ema(trained).encode(images))
    assert not torch.allclose(got, load_dinov2("tiny-random").encode(images), atol=1e-3)
    # a structure flow conditioned on another encoder does not export with this SLat flow
    code = export_main(["--run", str(runs["frozen"]), "--run", str(tmp_path / "slat_vae"), "--run",
                        str(tmp_path / "slat_flow"), "--base", base, "--output", str(tmp_path / "mixed")])
    assert code == 2 and "conditioned by different encoders" in capsys.readouterr().err
    assert not (tmp_path / "mixed").exists()


def test_misuse_is_refused_in_one_line(runs, tmp_path):
    data = runs["data"]
    with pytest.raises(TrainingInputError, match="true or false"):
        trains_encoder({"train_encoder": "yes"})
    cases = [
        (_config(tmp_path, "vae", "ss_vae", train_encoder=True), "ss_vae stage, which has no condition encoder"),
        (_config(tmp_path, "frozen_run", encoder=f"run:{runs['frozen']}"), "did not train its condition encoder"),
        (_config(tmp_path, "no_run", encoder=f"run:{tmp_path / 'nowhere'}"), "not an ss4d-train run"),
        (_config(tmp_path, "not_bool", train_encoder=1), "must be true or false"),
    ]
    for cfg, message in cases:
        res = _train(cfg, data, tmp_path / cfg.stem)
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert not (tmp_path / cfg.stem / "checkpoints").exists()
