"""Every bad input of ss4d-train / ss4d-export-pipeline: one clear line, exit 2 (1 for a stopped run), no
traceback, nothing half-written, no existing checkpoint harmed."""
import json

import pytest
import torch

from train_testkit import tiny_config, tiny_dataset, write_config  # noqa: F401  (fixture)

from ss4d.training.cli import main
from ss4d.training.export import main as export_main


def _run(capsys, cfg, data, out, *extra):
    code = main(["--config", str(cfg), "--data", str(data), "--output", str(out), "--no-progress", *map(str, extra)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _cfg(tmp_path, stage="ss_flow", name="c.json", phases=None, **edit):
    raw = tiny_config(stage, phases=phases or [{"frames": 2, "steps": 2, "batch_size": 1}], eval_every=0,
                      checkpoint_every=1)
    for section, values in edit.items():
        if isinstance(values, dict):
            raw[section].update(values)
        else:
            raw[section] = values
    return write_config(tmp_path / name, raw)


def test_missing_or_empty_dataset_and_bad_config_file(capsys, tmp_path):
    cfg = _cfg(tmp_path)
    code, err = _run(capsys, cfg, tmp_path / "nope", tmp_path / "run")
    assert code == 2 and "dataset not found" in err
    (tmp_path / "empty").mkdir()
    code, err = _run(capsys, cfg, tmp_path / "empty", tmp_path / "run")
    assert code == 2 and "holds no clips" in err
    code, err = _run(capsys, tmp_path / "missing.json", tmp_path / "empty", tmp_path / "run")
    assert code == 2 and "config not found" in err
    (tmp_path / "bad.json").write_text("{not json")
    code, err = _run(capsys, tmp_path / "bad.json", tmp_path / "empty", tmp_path / "run")
    assert code == 2 and "not valid JSON" in err
    assert not (tmp_path / "run").exists()                            # nothing written


def test_dataset_without_what_the_stage_needs(capsys, tmp_path, tiny_dataset):  # noqa: F811
    # latents of another encoder than the run names
    cfg = _cfg(tmp_path, "slat_flow", dataset={"latent_set": "dinov2_tiny_random_visible__my_trained_enc"})
    code, err = _run(capsys, cfg, tiny_dataset, tmp_path / "run")
    assert code == 2 and "no latents set 'dinov2_tiny_random_visible__my_trained_enc'" in err
    assert "slat_enc_4d" in err and "--slat-encoder" in err              # says what it has and what to do
    cfg = _cfg(tmp_path, "ss_flow", dataset={"ss_encoder": "ss_enc_other"})
    code, err = _run(capsys, cfg, tiny_dataset, tmp_path / "run")
    assert code == 2 and "no ss_latents set 'ss_enc_other'" in err
    assert not (tmp_path / "run").exists()


def test_clips_shorter_than_the_phase_and_odd_frames(capsys, tmp_path, tiny_dataset):  # noqa: F811
    cfg = _cfg(tmp_path, phases=[{"frames": 8, "steps": 1, "batch_size": 1}])
    code, err = _run(capsys, cfg, tiny_dataset, tmp_path / "run")
    assert code == 2 and "every clip is shorter than phase 0's 8 frames (longest usable: 6" in err
    cfg = _cfg(tmp_path, "slat_flow", phases=[{"frames": 3, "steps": 1, "batch_size": 1}])
    code, err = _run(capsys, cfg, tiny_dataset, tmp_path / "run")
    assert code == 2 and "even number of frames" in err


def test_init_folder_of_wrong_kind_or_shape(capsys, tmp_path, tiny_dataset):  # noqa: F811
    from trellis_ext.pipelines.tiny import write_tiny_image_to_3d

    cfg = _cfg(tmp_path)
    code, err = _run(capsys, cfg, tiny_dataset, tmp_path / "run", "--init", f"ss4d:{tmp_path}")
    assert code == 2 and "not a model folder" in err
    trellis = write_tiny_image_to_3d(str(tmp_path / "trellis3d"))
    code, err = _run(capsys, cfg, tiny_dataset, tmp_path / "run", "--init", f"ss4d:{trellis}")
    assert code == 2 and "'TrellisImageTo3DPipeline' pipeline, not 'TrellisVideoTo4DPipeline'" in err
    code, err = _run(capsys, cfg, tiny_dataset, tmp_path / "run", "--init", "bogus")
    assert code == 2 and "bad --init" in err
    code, err = _run(capsys, cfg, tiny_dataset, tmp_path / "run", "--init", f"run:{tmp_path}")
    assert code == 2 and "not a training run" in err
    # a model whose shape does not fit the dataset's latents
    raw = json.loads(cfg.read_text())
    raw["models"]["denoiser"]["args"]["resolution"] = 16
    code, err = _run(capsys, write_config(tmp_path / "big.json", raw), tiny_dataset, tmp_path / "run")
    assert code == 2 and "takes 8×16³ latents but the dataset's SS latents are 8×8³" in err
    # the 3D TRELLIS tiny folder inflates for ss_flow, but its 8³ / 32-channel-cond model meets 8³ latents:
    # a wrong-stage run folder is refused instead
    ok = _run(capsys, cfg, tiny_dataset, tmp_path / "ssflow")[0]
    assert ok == 0
    vae = _cfg(tmp_path, "ss_vae", name="vae.json")
    code, err = _run(capsys, vae, tiny_dataset, tmp_path / "run", "--init", f"run:{tmp_path / 'ssflow'}")
    assert code == 2 and "trained denoiser, the ss_vae stage needs encoder, decoder" in err
    assert not (tmp_path / "run").exists()


def test_lpips_without_local_weights(capsys, tmp_path, tiny_dataset):  # noqa: F811
    cfg = _cfg(tmp_path, "slat_vae", loss={"lpips": 0.2, "lpips_weights": str(tmp_path / "vgg16.pth")})
    code, err = _run(capsys, cfg, tiny_dataset, tmp_path / "run")
    assert code == 2 and "LPIPS was asked for (loss.lpips = 0.2) but its weights are missing" in err
    assert "vgg16.pth" in err and "set loss.lpips to 0" in err


def test_non_finite_loss_stops_naming_step_and_last_checkpoint(capsys, tmp_path, tiny_dataset, monkeypatch):  # noqa: F811
    from ss4d.training.ss_flow import SSFlowStage

    real = SSFlowStage.objective
    calls = {"n": 0}

    def poisoned(self, models, batch, gen, train=True):
        loss, logs = real(self, models, batch, gen, train)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 3 else loss), logs

    monkeypatch.setattr(SSFlowStage, "objective", poisoned)
    cfg = _cfg(tmp_path, phases=[{"frames": 2, "steps": 5, "batch_size": 1}], trainer={"checkpoint_every": 2})
    code, err = _run(capsys, cfg, tiny_dataset, tmp_path / "run")
    assert code == 1
    assert "non-finite loss (nan) at step 3" in err and "step_0000002" in err
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step_0000002"]


def test_export_errors(capsys, tmp_path):
    code = export_main(["--run", str(tmp_path), "--output", str(tmp_path / "out")])
    assert code == 2 and "is not an ss4d-train run" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_export_never_replaces_a_folder_that_is_not_a_model(capsys, tmp_path, tiny_dataset):  # noqa: F811
    assert _run(capsys, _cfg(tmp_path), tiny_dataset, tmp_path / "run")[0] == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    code = export_main(["--run", str(tmp_path / "run"), "--output", str(mine), "--models-only"])
    assert code == 2 and "is not a model folder; refusing" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep me"
    assert export_main(["--run", str(tmp_path / "run"), "--output", str(tmp_path / "m"), "--models-only"]) == 0
    assert export_main(["--run", str(tmp_path / "run"), "--output", str(tmp_path / "m"), "--models-only"]) == 0


def test_set_overrides_and_bad_set(capsys, tmp_path, tiny_dataset):  # noqa: F811
    cfg = _cfg(tmp_path)
    code, err = _run(capsys, cfg, tiny_dataset, tmp_path / "run", "--set", "dataset.ss_encoder=ss_enc_other")
    assert code == 2 and "no ss_latents set 'ss_enc_other'" in err      # the override reached the config
    code, err = _run(capsys, cfg, tiny_dataset, tmp_path / "run", "--set", "novalue")
    assert code == 2 and "is not KEY=VALUE" in err


def test_condition_encoder_width_must_match_the_model(capsys, tmp_path, tiny_dataset):  # noqa: F811
    raw = json.loads(_cfg(tmp_path).read_text())
    raw["models"]["denoiser"]["args"]["cond_channels"] = 48
    code, err = _run(capsys, write_config(tmp_path / "c48.json", raw), tiny_dataset, tmp_path / "run")
    assert code == 2 and "expects 48-channel condition tokens but the condition encoder gives 32" in err
