"""ss4d.Pipeline: end-to-end parity with the official SS4D run, loading, saving, dtypes, encoders."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import SS4D_FIXTURES, TRELLIS_FIXTURES, require_dir
from ss4d import Pipeline
from ss4d.errors import InputError, ModelFolderError
from ss4d.tiny import write_tiny_video_to_4d

E2E_ATOL = E2E_RTOL = 1e-3   # the fixture README's end-to-end tolerance (coords exact)
GAUSSIAN_ATTRS = ("_xyz", "_features_dc", "_scaling", "_rotation", "_opacity")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models on shared cores: one thread avoids OpenMP oversubscription (10-40x faster here);
    the fixture's 1-vs-2-thread differences (<= 1.5e-5) are far inside the tolerance."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def reference():
    folder = require_dir(SS4D_FIXTURES / "tiny_pipeline", "SS4D tiny_pipeline fixture")
    return folder, load_file(str(folder / "e2e_reference.safetensors"))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """Our tiny random 4D folder (written once per session, shared with test_cli)."""
    return write_tiny_video_to_4d(str(tmp_path_factory.getbasetemp() / "tiny_ss4d"))


def close(a, b):
    torch.testing.assert_close(a.float(), b.float(), atol=E2E_ATOL, rtol=E2E_RTOL)


def test_end_to_end_parity_with_official_run(reference):
    """Raw RGBA frames in, seed 42, the folder's own samplers and patch-embed encoder: the official
    draw order (seed after conditioning, SS noise then SLat noise) reproduces every stored tensor."""
    folder, ref = reference
    pipe = Pipeline.from_pretrained(folder)
    frames = [Image.open(folder / "frames" / f"{t}.png") for t in range(6)]
    res = pipe.run(frames, seed=42, progress=False, keep_trajectory=True)
    close(res.cond, ref["cond"])
    for i in range(len(res.ss.pred_x_t)):
        close(res.ss.pred_x_t[i], ref[f"ss.step{i}.pred_x_t"])
        close(res.ss.pred_x_0[i], ref[f"ss.step{i}.pred_x_0"])
    close(res.ss.samples, ref["ss.samples"])
    close(res.extras["ss_decoder_logits"], ref["ss.decoder_logits"])
    for t in range(6):
        assert torch.equal(res.coords[t], ref[f"coords.frame{t}"]), f"frame {t}: coords must match exactly"
    assert torch.equal(res.slat.coords, ref["slat.denormalized.coords"])
    for i in range(len(res.slat_trajectory.pred_x_t)):
        close(res.slat_trajectory.pred_x_t[i].feats, ref[f"slat.step{i}.pred_x_t.feats"])
        close(res.slat_trajectory.pred_x_0[i].feats, ref[f"slat.step{i}.pred_x_0.feats"])
    close(res.slat.feats, ref["slat.denormalized.feats"])
    assert len(res.gaussians) == 6
    for t, g in enumerate(res.gaussians):
        for attr in GAUSSIAN_ATTRS:
            close(getattr(g, attr), ref[f"gaussians.{t}.{attr}"])
    assert set(res.timings) >= {"preprocess", "condition", "sparse_structure", "slat", "decode", "total"}
    for t, im in enumerate(res.images):
        np.testing.assert_array_equal(np.asarray(im), np.asarray(Image.open(folder / "frames" / f"preprocessed_{t}.png")))


def test_stored_noise_path_and_seed_independence(reference):
    """Feeding the stored noise gives the same coords; another seed gives another structure."""
    folder, ref = reference
    pipe = Pipeline.from_pretrained(folder)
    frames = [Image.open(folder / "frames" / f"{t}.png") for t in range(6)]
    res = pipe.run(frames, seed=None, progress=False, ss_noise=ref["ss.noise"], slat_noise=ref["slat.noise.feats"],
                   ss_steps=4, slat_steps=1)
    assert all(torch.equal(res.coords[t], ref[f"coords.frame{t}"]) for t in range(6))
    other = pipe.run(frames, seed=7, progress=False, slat_steps=1)
    assert not all(c.shape == res.coords[t].shape and torch.equal(c, res.coords[t]) for t, c in enumerate(other.coords))


def test_save_pretrained_round_trip(reference, tmp_path):
    folder, _ = reference
    pipe = Pipeline.from_pretrained(folder)
    pipe.ss_params["steps"] = 3
    out = pipe.save_pretrained(tmp_path / "copy")
    again = Pipeline.from_pretrained(out)
    for key, model in pipe.models.items():
        a, b = model.state_dict(), again.models[key].state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), key
        assert type(model) is type(again.models[key])
    ea, eb = pipe.image_cond_model.state_dict(), again.image_cond_model.state_dict()
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    assert again.ss_params == pipe.ss_params and again.slat_params == pipe.slat_params
    assert again.slat_normalization == pipe.slat_normalization
    config = json.loads((tmp_path / "copy" / "pipeline.json").read_text())
    assert config["name"] == "TrellisVideoTo4DPipeline"
    assert config["args"]["models"] == json.loads((folder / "pipeline.json").read_text())["args"]["models"]
    # the 4D decoder keeps the official class name (SLatGaussianDecoder + rope_t)
    stem = config["args"]["models"]["slat_decoder_gs"]
    assert json.loads((tmp_path / "copy" / f"{stem}.json").read_text())["name"] == "SLatGaussianDecoder"


def test_tiny_writer_dinov2_encoder_and_bf16(tiny_model, tmp_path):
    """Our tiny random folder loads, says it is random, runs with a tiny random DINOv2-with-registers
    (transformers class, 1374 tokens), saves that encoder in transformers format and reloads it."""
    pipe = Pipeline.from_pretrained(tiny_model, image_cond_model="tiny-random")
    assert pipe.random_weights and type(pipe.image_cond_model).__name__ == "DINOv2Encoder"
    frames = [np.zeros((64, 64, 4), np.uint8) for _ in range(2)]
    for t, f in enumerate(frames):
        f[20:40, 24 + 2 * t:44 + 2 * t] = (200, 80, 40, 255)
    res = pipe.run(frames, seed=1, progress=False, ss_steps=2, slat_steps=1)
    assert res.cond.shape == (2, 1374, 32) and len(res.gaussians) == 2 and min(res.voxels_per_frame) > 0
    out = pipe.save_pretrained(tmp_path / "with_dinov2")
    assert (tmp_path / "with_dinov2" / "image_cond_model" / "config.json").is_file()
    again = Pipeline.from_pretrained(out)
    assert type(again.image_cond_model).__name__ == "DINOv2Encoder" and again.random_weights
    res2 = again.run(frames, seed=1, progress=False, ss_steps=2, slat_steps=1)
    assert all(torch.equal(a, b) for a, b in zip(res.coords, res2.coords))
    # bf16 torsos on CPU: runs, Gaussians come back float32
    bf = Pipeline.from_pretrained(tiny_model, dtype="bf16")
    assert bf.dtype == torch.bfloat16
    res3 = bf.run(frames, seed=1, progress=False, ss_steps=2, slat_steps=1)
    assert res3.gaussians[0]._xyz.dtype == torch.float32 and torch.isfinite(res3.gaussians[0].get_xyz).all()


def test_tiny_writer_never_removes_files_it_did_not_create(tmp_path):
    """scripts/demo.py writes the tiny folder into checkpoints/tiny_ss4d when its pipeline.json is
    missing: a user's files there (and with overwrite=True, beside an old tiny folder) must stay."""
    folder = tmp_path / "tiny_ss4d"
    folder.mkdir()
    (folder / "my_notes.txt").write_text("mine")
    (folder / "ckpts").mkdir()
    (folder / "ckpts" / "my_model.pt").write_bytes(b"weights")
    write_tiny_video_to_4d(str(folder))
    assert (folder / "my_notes.txt").read_text() == "mine"
    assert (folder / "ckpts" / "my_model.pt").read_bytes() == b"weights"
    first = (folder / "pipeline.json").read_text()
    write_tiny_video_to_4d(str(folder), seed=1, overwrite=True)
    assert (folder / "my_notes.txt").read_text() == "mine"
    assert (folder / "ckpts" / "my_model.pt").read_bytes() == b"weights"
    assert (folder / "pipeline.json").read_text() != first   # the model files were rewritten
    assert Pipeline.from_pretrained(str(folder)).random_weights


def test_odd_and_too_few_frames(reference):
    folder, _ = reference
    pipe = Pipeline.from_pretrained(folder)
    frames = [Image.open(folder / "frames" / f"{t}.png") for t in range(3)]
    with pytest.raises(InputError, match="even number of frames"):
        pipe.run(frames, progress=False)
    with pytest.raises(InputError, match="even number of frames"):
        pipe.run(frames[:1], progress=False)


def test_load_errors(reference, tmp_path, monkeypatch):
    folder, _ = reference
    with pytest.raises(ModelFolderError, match="not found.*checkpoints/README.md"):
        Pipeline.from_pretrained(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelFolderError, match="is a file"):
        Pipeline.from_pretrained(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFolderError, match="not an SS4D model folder"):
        Pipeline.from_pretrained(tmp_path / "empty")
    trellis = TRELLIS_FIXTURES / "tiny_pipeline"
    if trellis.is_dir():
        with pytest.raises(ModelFolderError, match="TrellisImageTo3DPipeline"):
            Pipeline.from_pretrained(trellis)
        # an SS4D pipeline.json pointing at TRELLIS 3D checkpoints: wrong classes
        fake = tmp_path / "fake"
        shutil.copytree(trellis, fake)
        cfg = json.loads((fake / "pipeline.json").read_text())
        cfg["name"] = "TrellisVideoTo4DPipeline"
        (fake / "pipeline.json").write_text(json.dumps(cfg))
        with pytest.raises(ModelFolderError, match="SS4D needs a"):
            Pipeline.from_pretrained(fake)
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken, ignore=shutil.ignore_patterns("frames", "e2e_reference*"))
    stem = json.loads((broken / "pipeline.json").read_text())["args"]["models"]["slat_flow_model"]
    weights = broken / f"{stem}.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelFolderError, match="cannot load"):
        Pipeline.from_pretrained(broken)
    no_enc = tmp_path / "no_encoder"
    shutil.copytree(folder, no_enc, ignore=shutil.ignore_patterns("frames", "e2e_reference*", "image_cond_model*"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("SS4D_DINOV2", raising=False)
    with pytest.raises(ModelFolderError, match="condition encoder.*--dinov2"):
        Pipeline.from_pretrained(no_enc)


# ------------------------------------------------------------------------------ save_pretrained never wipes (8: 3)
def _weights_equal(a, b):
    return all(torch.equal(x, y) for k in a.models for x, y in zip(a.models[k].state_dict().values(),
                                                                    b.models[k].state_dict().values()))


def test_save_pretrained_refuses_a_users_folder(tiny_model, tmp_path):
    from user_files import plant_user_files, snapshot

    pipe = Pipeline.from_pretrained(tiny_model)
    folder = plant_user_files(tmp_path / "project")
    before = snapshot(folder)
    with pytest.raises(InputError, match="not empty and holds no pipeline.json.*overwrite=True"):
        pipe.save_pretrained(folder)
    assert snapshot(folder) == before
    pipe.save_pretrained(folder, overwrite=True)          # asked for: model files added, nothing removed
    after = snapshot(folder)
    assert all(after[k] == v for k, v in before.items())
    assert _weights_equal(Pipeline.from_pretrained(folder), pipe)
    assert sorted(os.listdir(tmp_path)) == ["project"]


def test_save_pretrained_over_a_model_folder_replaces_only_model_files(tiny_model, tmp_path):
    """Saving over an existing model folder (even the one it was loaded from) keeps the user's files
    there (README, notes, .git) and the result loads with the new weights."""
    from user_files import plant_user_files, snapshot

    folder = tmp_path / "model"
    Pipeline.from_pretrained(tiny_model).save_pretrained(folder)
    plant_user_files(folder)
    from user_files import USER_FILES

    mine = {rel.split("/")[0] for rel in USER_FILES}
    user = {k: v for k, v in snapshot(folder).items() if k.split(os.sep)[0] in mine}
    pipe = Pipeline.from_pretrained(folder)
    with torch.no_grad():
        next(pipe.models["slat_flow_model"].parameters()).add_(1.0)
    pipe.save_pretrained(folder)
    after = snapshot(folder)
    assert all(after[k] == v for k, v in user.items())
    assert _weights_equal(Pipeline.from_pretrained(folder), pipe)
    assert sorted(os.listdir(tmp_path)) == ["model"]
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        pipe.save_pretrained(tmp_path / "a_file")
    assert (tmp_path / "a_file").read_text() == "x"


# ------------------------------------------------------------------------------ finiteness (issue 8 item 6)
def _poison(pipe, key):
    with torch.no_grad():
        for p in pipe.models[key].parameters():
            p.fill_(float("nan"))


def test_nan_weights_are_refused_at_load(tiny_model, tmp_path):
    pipe = Pipeline.from_pretrained(tiny_model)
    _poison(pipe, "slat_decoder_gs")
    pipe.save_pretrained(tmp_path / "nan")
    with pytest.raises(ModelFolderError, match="weights of slat_decoder_gs hold NaN/inf"):
        Pipeline.from_pretrained(tmp_path / "nan")


@pytest.mark.parametrize("key,stage", [("sparse_structure_flow_model", "sparse-structure"),
                                       ("slat_flow_model", "structured-latent"), ("slat_decoder_gs", "decode")])
def test_nonfinite_stage_output_is_a_generation_error(tiny_model, key, stage):
    """NaN weights that slip past loading (set in memory here) stop the run at the stage they poison."""
    from ss4d.errors import GenerationError

    pipe = Pipeline.from_pretrained(tiny_model)
    frames = [np.zeros((64, 64, 4), np.uint8) for _ in range(2)]
    for t, f in enumerate(frames):
        f[20:40, 24 + 2 * t:44 + 2 * t] = (200, 80, 40, 255)
    ok = pipe.run(frames, seed=1, progress=False, ss_steps=1, slat_steps=1)
    assert ok.voxels_per_frame[0] > 0
    _poison(pipe, key)
    with pytest.raises(GenerationError, match=f"the {stage} stage produced NaN/inf.*(weights|--dtype)"):
        pipe.run(frames, seed=1, progress=False, ss_steps=1, slat_steps=1)


# ------------------------------------------------------------------------------ API argument checks (issue 8 item 12)
def test_api_arguments_are_checked(tiny_model):
    with pytest.raises(InputError, match="unsupported device 'tpu'.*cpu, cuda"):
        Pipeline.from_pretrained(tiny_model, device="tpu")
    pipe = Pipeline.from_pretrained(tiny_model)
    with pytest.raises(InputError, match="unsupported device"):
        pipe.to("tpu")
    frames = [np.zeros((64, 64, 4), np.uint8) for _ in range(2)]
    with pytest.raises(InputError, match="seed must be an integer between 0 and"):
        pipe.run(frames, seed=2 ** 64, progress=False)
    with pytest.raises(InputError, match="cfg strength must be a finite number"):
        pipe.run(frames, ss_cfg=float("nan"), progress=False)


def test_saved_model_follows_the_umask(tiny_model, tmp_path):
    """save_pretrained under umask 022: folders 0755, pipeline.json / .safetensors 0644 (not mkstemp's 0600)."""
    import stat

    pipe = Pipeline.from_pretrained(tiny_model)
    old = os.umask(0o022)
    try:
        pipe.save_pretrained(tmp_path / "m")
    finally:
        os.umask(old)
    paths = [tmp_path / "m", *(tmp_path / "m").rglob("*")]
    assert any(p.suffix == ".safetensors" for p in paths)
    wrong = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in paths
             if stat.S_IMODE(p.stat().st_mode) != (0o755 if p.is_dir() else 0o644)}
    assert wrong == {}


def test_saved_dinov2_encoder_follows_the_umask(tiny_model, tmp_path):
    """The transformers encoder folder too (its safetensors writer creates 0600 files)."""
    import stat

    pipe = Pipeline.from_pretrained(tiny_model, image_cond_model="tiny-random")
    old = os.umask(0o022)
    try:
        pipe.save_pretrained(tmp_path / "m")
    finally:
        os.umask(old)
    enc = tmp_path / "m" / "image_cond_model"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [enc, *enc.iterdir()]}
    assert any(n.endswith(".safetensors") for n in modes)
    assert {n: oct(m) for n, m in modes.items() if m != (0o755 if (enc / n).is_dir() or n == enc.name else 0o644)} == {}
