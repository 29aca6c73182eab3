"""``ss4d-generate``: the bad-input table (exit code + one-line message each) and real runs on every
shared video with a tiny random pipeline (all outputs written; PLY / npz / PNG reload to the same data)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, SHARED, TRELLIS_FIXTURES
from ss4d.cli import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OK, main
from ss4d.tiny import write_tiny_video_to_4d

VIDEOS = SHARED / "data" / "videos"
SHARED_INPUTS = ["dancing_robot_fg.mp4", "sighing_frog_fg.mp4", "rose_rgba"]
FAST = ["--frames", "2", "--resolution", "32", "--no-progress"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models on shared cores: one thread avoids OpenMP oversubscription (10-40x faster here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return write_tiny_video_to_4d(str(tmp_path_factory.getbasetemp() / "tiny_ss4d"))


def disc_rgba(n, size=64):
    yy, xx = np.mgrid[:size, :size]
    out = []
    for t in range(n):
        f = np.zeros((size, size, 4), np.uint8)
        f[(yy - 32) ** 2 + (xx - 20 - 4 * t) ** 2 < 100] = (200, 60, 40, 255)
        out.append(f)
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Small synthetic inputs for the error table."""
    d = tmp_path_factory.mktemp("cli_inputs")
    good = d / "good"
    good.mkdir()
    for t, f in enumerate(disc_rgba(4)):
        Image.fromarray(f).save(good / f"{t}.png")
    one = d / "one"
    one.mkdir()
    Image.fromarray(disc_rgba(1)[0]).save(one / "0.png")
    (d / "emptydir").mkdir()
    transparent = d / "transparent"
    transparent.mkdir()
    for t in range(2):
        Image.fromarray(np.zeros((32, 32, 4), np.uint8)).save(transparent / f"{t}.png")
    cluttered = d / "cluttered"
    cluttered.mkdir()
    rng = np.random.default_rng(0)
    for t in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(cluttered / f"{t}.png")
    masks = d / "masks3"
    masks.mkdir()
    for t in range(3):
        Image.fromarray(np.zeros((64, 64), np.uint8)).save(masks / f"m{t}.png")
    (d / "empty.mp4").write_bytes(b"")
    (d / "garbage.mp4").write_bytes(b"\x00not a video" * 500)
    real = VIDEOS / "dancing_robot_fg.mp4"
    data = real.read_bytes() if real.is_file() else b"\x00" * 4000
    (d / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (d / "notes.txt").write_text("hello")
    Image.fromarray(disc_rgba(1)[0]).save(d / "still.png")
    (d / "a_file").write_text("x")
    occupied = d / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    (d / "model_empty").mkdir()
    return d


def run_cli(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# (case id, argv builder (inputs dir, model, out) -> argv, exit code, message regex)
BAD_INPUTS = [
    ("missing_file", lambda d, m, o: [d / "nope.mp4", "--model", m, "-o", o], "input not found"),
    ("empty_file", lambda d, m, o: [d / "empty.mp4", "--model", m, "-o", o], r"is empty \(0 bytes\)"),
    ("corrupt_video", lambda d, m, o: [d / "garbage.mp4", "--model", m, "-o", o], "cannot decode .* as a video"),
    ("truncated_video", lambda d, m, o: [d / "truncated.mp4", "--model", m, "-o", o], "truncated.mp4"),
    ("unsupported_type", lambda d, m, o: [d / "notes.txt", "--model", m, "-o", o], "unsupported input type '.txt'"),
    ("single_image", lambda d, m, o: [d / "still.png", "--model", m, "-o", o], "is a single image"),
    ("zero_frames_folder", lambda d, m, o: [d / "emptydir", "--model", m, "-o", o], "has no image frames"),
    ("one_frame", lambda d, m, o: [d / "one", "--model", m, "-o", o], "needs at least 2"),
    ("empty_alpha", lambda d, m, o: [d / "transparent", "--model", m, "-o", o], "mask is empty in every frame"),
    ("cluttered_background", lambda d, m, o: [d / "cluttered", "--model", m, "-o", o],
     "not a solid colour.*--mask-dir.*rembg"),
    ("mask_count_mismatch", lambda d, m, o: [d / "good", "--model", m, "-o", o, "--mask-dir", d / "masks3"],
     "3 masks but 4 frames"),
    ("mask_dir_missing", lambda d, m, o: [d / "good", "--model", m, "-o", o, "--mask-dir", d / "nomasks"],
     "--mask-dir .* is not a folder"),
    ("odd_frames", lambda d, m, o: [d / "good", "--model", m, "-o", o, "--frames", "3"], "--frames must be even"),
    ("zero_frames_flag", lambda d, m, o: [d / "good", "--model", m, "-o", o, "--frames", "0"], "--frames must be >= 1"),
    ("start_past_end", lambda d, m, o: [d / "good", "--model", m, "-o", o, "--start", "10"],
     "no frames left after selection"),
    ("fps_on_folder", lambda d, m, o: [d / "good", "--model", m, "-o", o, "--fps", "8"],
     "--fps needs an input with a frame rate"),
    ("bad_fps", lambda d, m, o: [d / "good", "--model", m, "-o", o, "--fps", "-2"], "--fps must be a positive"),
    ("output_under_file", lambda d, m, o: [d / "good", "--model", m, "-o", d / "a_file" / "out"], "is a file"),
    ("output_occupied", lambda d, m, o: [d / "good", "--model", m, "-o", d / "occupied"], "--overwrite"),
    ("missing_model", lambda d, m, o: [d / "good", "--model", d / "no_model", "-o", o],
     "model folder not found.*checkpoints/README.md"),
    ("hub_id_as_model", lambda d, m, o: [d / "good", "--model", "lizb6626/SS4D", "-o", o],
     "looks like a Hugging Face hub id.*huggingface-cli download"),
    ("model_is_file", lambda d, m, o: [d / "good", "--model", d / "a_file", "-o", o], "is a file, not a model folder"),
    ("model_without_pipeline_json", lambda d, m, o: [d / "good", "--model", d / "model_empty", "-o", o],
     "not an SS4D model folder"),
    ("trellis_3d_model", lambda d, m, o: [d / "good", "--model", TRELLIS_FIXTURES / "tiny_pipeline", "-o", o],
     "not SS4D's 'TrellisVideoTo4DPipeline'"),
    ("fp16_on_cpu", lambda d, m, o: [d / "good", "--model", m, "-o", o, "--dtype", "fp16", "--device", "cpu"],
     "fp16 needs a GPU"),
    ("bad_render_kind", lambda d, m, o: [d / "good", "--model", m, "-o", o, "--render", "novel,spin"],
     "unknown render kind"),
    ("odd_resolution", lambda d, m, o: [d / "good", "--model", m, "-o", o, "--resolution", "33"], "even number of pixels"),
    ("zero_steps", lambda d, m, o: [d / "good", "--model", m, "-o", o, "--steps-ss", "0"], "--steps-ss must be >= 1"),
    ("negative_cfg", lambda d, m, o: [d / "good", "--model", m, "-o", o, "--cfg-slat", "-1"], "--cfg-slat must be"),
    ("bad_pitch", lambda d, m, o: [d / "good", "--model", m, "-o", o, "--pitch", "120"], "--pitch must be between"),
    ("unknown_flag", lambda d, m, o: [d / "good", "--model", m, "-o", o, "--frobnicate"], "unrecognized arguments"),
    ("no_video_argument", lambda d, m, o: ["--model", m], "required: VIDEO"),
]
if not torch.cuda.is_available():
    BAD_INPUTS.append(("cuda_unavailable", lambda d, m, o: [d / "good", "--model", m, "-o", o, "--device", "cuda"],
                       "no CUDA device is available"))


@pytest.mark.parametrize("case,build,pattern", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input(case, build, pattern, inputs, tiny_model, tmp_path, capsys):
    if case == "trellis_3d_model" and not (TRELLIS_FIXTURES / "tiny_pipeline").is_dir():
        pytest.skip("TRELLIS tiny_pipeline fixture not found")
    out = tmp_path / "out"
    code, _, err = run_cli(build(inputs, tiny_model, out), capsys)
    assert code == EXIT_BAD_INPUT, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert "Traceback" not in err
    import re

    assert re.search(pattern, lines[0]), lines[0]
    assert not out.exists(), "nothing may be written on a bad input"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp folder may be left behind"


def test_bad_input_table_is_large_enough():
    assert len(BAD_INPUTS) >= 15


def test_debug_shows_traceback(inputs, tiny_model, tmp_path, capsys):
    code, _, err = run_cli([inputs / "garbage.mp4", "--model", tiny_model, "-o", tmp_path / "o", "--debug"], capsys)
    assert code == EXIT_BAD_INPUT and "Traceback" in err


def test_empty_structure_is_exit_1(inputs, tiny_model, tmp_path, capsys):
    """A frame whose structure decodes to no voxel: exit 1, one line, nothing written."""
    from ss4d import Pipeline

    pipe = Pipeline.from_pretrained(tiny_model)
    with torch.no_grad():
        pipe.models["sparse_structure_decoder"].out_layer[-1].bias -= 1e4
    broken = pipe.save_pretrained(tmp_path / "empty_structure")
    code, _, err = run_cli([inputs / "good", "--model", broken, "-o", tmp_path / "o"] + FAST, capsys)
    assert code == EXIT_INTERNAL and "is empty" in err and "--seed" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_internal_error_is_one_line_exit_1(inputs, tiny_model, tmp_path, capsys, monkeypatch):
    from ss4d import pipeline

    def boom(*a, **k):
        raise RuntimeError("simulated failure\nsecond line")

    monkeypatch.setattr(pipeline.Pipeline, "run", boom)
    code, _, err = run_cli([inputs / "good", "--model", tiny_model, "-o", tmp_path / "o"] + FAST, capsys)
    assert code == EXIT_INTERNAL and "internal error: RuntimeError: simulated failure second line" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and not (tmp_path / "o").exists()


def test_help(capsys):
    code, out, _ = run_cli(["--help"], capsys)
    assert code == EXIT_OK
    for word in ("VIDEO", "--frames", "--steps-ss", "--cfg-slat", "--render", "--no-progress", "even", "example"):
        assert word in out


@pytest.mark.parametrize("name", SHARED_INPUTS)
def test_cli_on_shared_videos(name, tiny_model, tmp_path, capsys):
    """Every shared clip -> all outputs; the files reload to exactly what the pipeline produced."""
    from ss4d import Pipeline
    from ss4d.io import FrameSelection, read_frames
    from ss4d.matting import matte_frames
    from ss4d.preprocess import preprocess_frames
    from trellis_ext.representations import load_ply

    src = VIDEOS / name
    if not src.exists():
        pytest.skip(f"{src} not found")
    out = tmp_path / "out"
    code, stdout, err = run_cli([src, "-o", out, "--model", tiny_model, "--stride", "8"] + FAST, capsys)
    assert code == EXIT_OK, err
    assert "RANDOM weights" in stdout
    result = json.loads((out / "result.json").read_text())
    assert result["num_frames"] == 2 and result["seed"] == 42 and result["model"]["random_weights"]
    assert result["input"]["matting"] == ("alpha" if name == "rose_rgba" else "solid")
    assert set(result["renders"]) == {"novel", "turntable", "grid", "compare"}
    assert {"read", "matting", "condition", "sparse_structure", "slat", "decode", "render", "total"} <= set(result["timings_s"])
    assert "torch" in result["versions"]
    for kind, info in result["renders"].items():
        assert (out / info["file"]).stat().st_size > 0 and (out / info["preview"]).is_file()
    assert Image.open(out / "renders" / "grid.png").size == (64, 64)
    assert Image.open(out / "renders" / "compare.png").size == (64, 32)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    # the same run through the API: the written files hold exactly its tensors
    clip = read_frames(src, FrameSelection(stride=8, num_frames=2))
    images, _ = preprocess_frames(matte_frames(clip.frames)[0])
    res = Pipeline.from_pretrained(tiny_model).run(images, seed=42, preprocess_image=False, progress=False)
    for t in range(2):
        g = load_ply(out / "gaussians" / f"frame_{t:03d}.ply")
        ref = res.gaussians[t]
        for attr in ("get_xyz", "get_features", "get_scaling", "get_rotation", "get_opacity"):
            torch.testing.assert_close(getattr(g, attr), getattr(ref, attr), atol=1e-5, rtol=1e-5)
        with np.load(out / "coords" / f"frame_{t:03d}.npz") as z:
            np.testing.assert_array_equal(z["coords"], res.coords[t].numpy())
            assert int(z["resolution"]) == res.resolution
        np.testing.assert_array_equal(np.asarray(Image.open(out / "input" / f"frame_{t:03d}.png")),
                                      np.asarray(res.images[t]))
    assert result["voxels_per_frame"] == res.voxels_per_frame


def test_overwrite_and_render_none(inputs, tiny_model, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "old.txt").write_text("old")
    code, _, err = run_cli([inputs / "good", "-o", out, "--model", tiny_model, "--overwrite", "--render", "none"] + FAST,
                           capsys)
    assert code == EXIT_OK, err
    assert not (out / "old.txt").exists() and not (out / "renders").exists()
    assert len(list((out / "gaussians").glob("*.ply"))) == 2


def test_console_script_subprocess(inputs, tmp_path):
    """The installed entry point: bad input -> exit 2 and one line, no traceback."""
    exe = Path(sys.executable).with_name("ss4d-generate")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "ss4d.cli"]
    env = dict(os.environ, SS4D_MODEL=str(tmp_path / "no_model"))
    p = subprocess.run(cmd + [str(inputs / "good"), "-o", str(tmp_path / "o")], capture_output=True, text=True,
                       env=env, cwd=REPO, timeout=120)
    assert p.returncode == EXIT_BAD_INPUT
    assert "model folder not found" in p.stderr and "SS4D_MODEL" in p.stderr and "Traceback" not in p.stderr
