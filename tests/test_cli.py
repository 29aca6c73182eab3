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


def write_frames(folder, frames):
    folder.mkdir()
    for t, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{t}.png")
    return folder


def broken_models(d, tiny_model):
    """A model folder with NaN weights and one whose weights are a pickle .pt file."""
    import shutil

    from ss4d import Pipeline

    pipe = Pipeline.from_pretrained(tiny_model)
    with torch.no_grad():
        for p in pipe.models["slat_flow_model"].parameters():
            p.fill_(float("nan"))
    pipe.save_pretrained(d / "model_nan")
    shutil.copytree(tiny_model, d / "model_pickle")
    stem = json.loads((d / "model_pickle" / "pipeline.json").read_text())["args"]["models"]["slat_flow_model"]
    weights = d / "model_pickle" / f"{stem}.safetensors"
    weights.rename(weights.with_suffix(".pt"))


def ffmpeg(*args):
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", *map(str, args)], check=True)


def broken_videos(d):
    """A video with bytes overwritten mid-stream, a fast-start one cut in half, an audio-only mp4."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(40)]
    import imageio_ffmpeg

    w = imageio_ffmpeg.write_frames(str(d / "noise.mp4"), (64, 64), fps=8, macro_block_size=1, ffmpeg_log_level="error")
    w.send(None)
    for f in frames:
        w.send(np.ascontiguousarray(f))
    w.close()
    data = bytearray((d / "noise.mp4").read_bytes())
    data[len(data) // 3: len(data) // 3 + 3000] = rng.integers(0, 255, 3000, dtype=np.uint8).tobytes()
    (d / "corrupt_mid.mp4").write_bytes(bytes(data))
    ffmpeg("-i", d / "noise.mp4", "-c", "copy", "-movflags", "+faststart", d / "faststart.mp4")
    data = (d / "faststart.mp4").read_bytes()
    (d / "cut.mp4").write_bytes(data[: len(data) // 2])
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", d / "audio_only.mp4")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_model):
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
    (d / "comments_only.txt").write_text("# nothing here\n\n")
    Image.fromarray(disc_rgba(1)[0]).save(d / "still.png")
    (d / "a_file").write_text("x")
    occupied = d / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    (d / "link").symlink_to(occupied)
    (d / "model_empty").mkdir()
    broken_models(d, tiny_model)
    broken_videos(d)
    tiny = np.zeros((2, 2, 4), np.uint8)
    tiny[0, 0] = 255
    write_frames(d / "tiny_frames", [tiny, tiny])
    dot = np.zeros((64, 64, 4), np.uint8)
    dot[30, 30] = 255
    write_frames(d / "one_pixel_object", [dot, dot])
    rgba = disc_rgba(2)
    write_frames(d / "mixed", [rgba[0], np.where(rgba[1][..., 3:] > 0, rgba[1][..., :3], 255).astype(np.uint8)])
    write_frames(d / "uniform", [np.full((64, 64, 3), 255, np.uint8)] * 2)
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
    ("truncated_video", lambda d, m, o: [d / "truncated.mp4", "--model", m, "-o", o],
     "truncated.mp4 is truncated.*index is missing"),
    ("truncated_faststart_video", lambda d, m, o: [d / "cut.mp4", "--model", m, "-o", o, "--frames", "32"],
     r"cut.mp4 is truncated.*40 frames expected.*\d+ decoded"),
    ("corrupt_frame", lambda d, m, o: [d / "corrupt_mid.mp4", "--model", m, "-o", o, "--frames", "32"],
     r"frame \d+ of .*corrupt_mid.mp4 could not be decoded"),
    ("audio_only_video", lambda d, m, o: [d / "audio_only.mp4", "--model", m, "-o", o], "has no video stream"),
    ("frames_2x2", lambda d, m, o: [d / "tiny_frames", "--model", m, "-o", o], "2x2 pixels; SS4D needs at least 16"),
    ("one_pixel_object", lambda d, m, o: [d / "one_pixel_object", "--model", m, "-o", o], "object is only 1x1 pixels"),
    ("mixed_rgb_rgba", lambda d, m, o: [d / "mixed", "--model", m, "-o", o],
     r"1 of 2 frames have no transparency \(first: 1.png\)"),
    ("uniform_frames", lambda d, m, o: [d / "uniform", "--model", m, "-o", o], "no object found"),
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
    ("zero_frames_flag", lambda d, m, o: [d / "good", "--model", m, "-o", o, "--frames", "0"],
     "--frames must be >= 2, got 0 .*pair"),
    ("seed_too_large", lambda d, m, o: [d / "good", "--model", m, "-o", o, "--seed", str(2 ** 63)],
     "--seed must be <= 9223372036854775807"),
    ("start_past_end", lambda d, m, o: [d / "good", "--model", m, "-o", o, "--start", "10"],
     "no frames left after selection"),
    ("fps_on_folder", lambda d, m, o: [d / "good", "--model", m, "-o", o, "--fps", "8"],
     "--fps needs an input with a frame rate"),
    ("bad_fps", lambda d, m, o: [d / "good", "--model", m, "-o", o, "--fps", "-2"], "--fps must be a positive"),
    ("output_under_file", lambda d, m, o: [d / "good", "--model", m, "-o", d / "a_file" / "out"], "is a file"),
    ("output_occupied", lambda d, m, o: [d / "good", "--model", m, "-o", d / "occupied"], "--overwrite"),
    ("overwrite_foreign_folder", lambda d, m, o: [d / "good", "--model", m, "-o", d / "occupied", "--overwrite"],
     "not an ss4d output.*left untouched"),
    ("overwrite_input_folder", lambda d, m, o: [d / "good", "--model", m, "-o", d / "good", "--overwrite"],
     "is the input"),
    ("overwrite_input_parent", lambda d, m, o: [d / "good", "--model", m, "-o", d, "--overwrite"],
     "contains the input"),
    ("overwrite_model_folder", lambda d, m, o: [d / "good", "--model", m, "-o", m, "--overwrite"],
     "is the model folder"),
    ("output_symlink", lambda d, m, o: [d / "good", "--model", m, "-o", d / "link", "--overwrite"], "symbolic link"),
    ("output_name_too_long", lambda d, m, o: [d / "good", "--model", m, "-o", d / ("x" * 250)], "too long"),
    ("nan_weights", lambda d, m, o: [d / "good", "--model", d / "model_nan", "-o", o] + FAST,
     "weights of slat_flow_model hold NaN/inf"),
    ("pickle_checkpoint", lambda d, m, o: [d / "good", "--model", d / "model_pickle", "-o", o] + FAST,
     r"\.pt is a pickle checkpoint, but only safetensors are read"),
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


BAD_INPUTS += [
    ("odd_time_chunk", lambda d, m, o: [d / "good", "--model", m, "-o", o, "--time-chunk", "3"], "even chunk"),
    ("time_overlap_too_large", lambda d, m, o: [d / "good", "--model", m, "-o", o, "--time-chunk", "2",
                                                "--time-overlap", "2"], r"overlap in \[0, chunk\)"),
    ("batch_missing", lambda d, m, o: ["--batch", d / "nope_dir", "--model", m, "-o", o], "batch input not found"),
    ("batch_empty_folder", lambda d, m, o: ["--batch", d / "emptydir", "--model", m, "-o", o],
     "holds no videos, GIFs or frame folders"),
    ("batch_empty_list", lambda d, m, o: ["--batch", d / "comments_only.txt", "--model", m, "-o", o],
     "holds no input paths"),
    ("batch_not_a_list", lambda d, m, o: ["--batch", d / "a_file", "--model", m, "-o", o],
     "needs a folder or a list file"),
    ("batch_output_inside_input", lambda d, m, o: ["--batch", d / "emptydir", "--model", m, "-o", d / "emptydir" / "o"],
     "is inside the batch folder"),
    ("unknown_preset", lambda d, m, o: [d / "good", "--model", m, "-o", o, "--preset", "turbo"],
     r"--preset: invalid choice: 'turbo'"),
    ("unknown_solver", lambda d, m, o: [d / "good", "--model", m, "-o", o, "--solver", "rk4"],
     r"--solver: invalid choice: 'rk4'"),
]
if not torch.cuda.is_available():
    BAD_INPUTS.append(("fp8_without_gpu", lambda d, m, o: [d / "good", "--model", m, "-o", o, "--fp8"],
                       r"--fp8 needs a CUDA GPU with compute capability >= 8\.9 \(this run is on the CPU\)"))



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


def test_batch_isolates_failures_and_loads_the_model_once(inputs, tiny_model, tmp_path, capsys, monkeypatch):
    """A folder batch with one broken video: the two good inputs are written, the bad one is
    reported, exit 1 says that something failed, batch.json counts; one model load."""
    from ss4d import Pipeline

    batch = tmp_path / "clips"
    batch.mkdir()
    for name, n in (("a", 2), ("c", 4)):
        write_frames(batch / name, disc_rgba(n))
    (batch / "b.mp4").write_bytes((inputs / "garbage.mp4").read_bytes())
    (batch / "ignored.txt").write_text("not an input")
    loads = []
    real = Pipeline.from_pretrained.__func__
    monkeypatch.setattr(Pipeline, "from_pretrained", classmethod(lambda cls, *a, **k: loads.append(1) or real(cls, *a, **k)))
    out = tmp_path / "out"
    code, stdout, err = run_cli(["--batch", batch, "--model", tiny_model, "-o", out, "--render", "none"] + FAST, capsys)
    assert code == EXIT_INTERNAL
    assert err.strip().splitlines() == [f"ss4d-generate: error: 1 of 3 batch items failed (see batch.json)"]
    assert len(loads) == 1
    summary = json.loads((out / "batch.json").read_text())
    assert (summary["done"], summary["failed"]) == (2, 1) and summary["items_per_hour"] > 0
    assert [Path(r["input"]).name for r in summary["items"]] == ["a", "b.mp4", "c"]
    assert [r["status"] for r in summary["items"]] == ["ok", "failed", "ok"]
    assert "cannot decode" in summary["items"][1]["error"]
    for name in ("a", "c"):
        assert json.loads((out / name / "result.json").read_text())["num_frames"] == 2
    assert not (out / "b").exists()
    assert "items/hour" in stdout
    # a second batch into the same folder: refused without --overwrite (batch.json is there) ...
    code, _, err = run_cli(["--batch", batch, "--model", tiny_model, "-o", out, "--render", "none"] + FAST, capsys)
    assert code == EXIT_BAD_INPUT and "batch.json already exists" in err
    # ... and a batch.json that ss4d did not write is never replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "batch.json").write_text('{"my": "data"}')
    code, _, err = run_cli(["--batch", batch, "--model", tiny_model, "-o", mine, "--overwrite"] + FAST, capsys)
    assert code == EXIT_BAD_INPUT and (mine / "batch.json").read_text() == '{"my": "data"}'


def test_batch_list_file(inputs, tiny_model, tmp_path, capsys):
    """A list file: comments and blank lines skipped, relative paths from the list's folder, a
    missing path is one failed item; repeated stems get distinct folders."""
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    write_frames(tmp_path / "x" / "clip", disc_rgba(2))
    write_frames(tmp_path / "y" / "clip", disc_rgba(2))
    lst = tmp_path / "list.txt"
    lst.write_text("# my clips\nx/clip\n\ny/clip\nnot_there.mp4\n")
    out = tmp_path / "out"
    code, _, err = run_cli(["--batch", lst, "--model", tiny_model, "-o", out, "--render", "none"] + FAST, capsys)
    assert code == EXIT_INTERNAL and "1 of 3" in err
    summary = json.loads((out / "batch.json").read_text())
    assert [r["status"] for r in summary["items"]] == ["ok", "ok", "failed"]
    assert "input not found" in summary["items"][2]["error"]
    assert (out / "clip" / "result.json").is_file() and (out / "clip_2" / "result.json").is_file()


def test_speed_flags_give_the_default_result(inputs, tiny_model, tmp_path, capsys):
    """--low-vram --cfg-batched --kv-cache: the same Gaussians as the default run (float tolerance)."""
    from trellis_ext.representations import load_ply

    outs = []
    for extra in ([], ["--low-vram", "--cfg-batched", "--kv-cache"], ["--cfg-batched", "--kv-cache"]):
        out = tmp_path / f"out{len(outs)}"
        code, _, err = run_cli([inputs / "good", "--model", tiny_model, "-o", out, "--render", "none"] + FAST + extra,
                               capsys)
        assert code == EXIT_OK, err
        outs.append(out)
    recorded = json.loads((outs[1] / "result.json").read_text())
    assert recorded["model"]["low_vram"] and recorded["sampler"]["slat"]["kv_cache"]
    assert recorded["sampler"]["slat"]["cfg_mode"] == "sequential"   # what low-VRAM mode ran
    assert json.loads((outs[2] / "result.json").read_text())["sampler"]["slat"]["cfg_mode"] == "batched"
    for t in range(2):
        ref = load_ply(outs[0] / "gaussians" / f"frame_{t:03d}.ply")
        for o in outs[1:]:
            g = load_ply(o / "gaussians" / f"frame_{t:03d}.ply")
            torch.testing.assert_close(g.get_xyz, ref.get_xyz, atol=1e-5, rtol=1e-5)
            # batched CFG sums in another order; the SH colour features (~1 in size) move by up to ~3e-5
            torch.testing.assert_close(g.get_features, ref.get_features, atol=1e-4, rtol=1e-5)


def test_presets(inputs, tiny_model, tmp_path, capsys):
    """--preset default is exactly the run without flags; --preset fast (Heun, fewer steps, batched
    CFG, K/V cache) gives other Gaussians and records its settings; an explicit flag overrides it."""
    from trellis_ext.representations import load_ply

    outs = {}
    for name, extra in (("none", []), ("default", ["--preset", "default"]), ("fast", ["--preset", "fast"]),
                        ("fast_euler", ["--preset", "fast", "--solver", "euler", "--no-cfg-batched",
                                        "--steps-slat", "3"])):
        out = tmp_path / name
        code, _, err = run_cli([inputs / "good", "--model", tiny_model, "-o", out, "--render", "none"] + FAST + extra,
                               capsys)
        assert code == EXIT_OK, err
        outs[name] = out
    for t in range(2):
        ply = f"frame_{t:03d}.ply"
        assert (outs["default"] / "gaussians" / ply).read_bytes() == (outs["none"] / "gaussians" / ply).read_bytes()
        ref, fast = load_ply(outs["none"] / "gaussians" / ply), load_ply(outs["fast"] / "gaussians" / ply)
        assert fast.get_xyz.shape != ref.get_xyz.shape or not torch.allclose(fast.get_xyz, ref.get_xyz, atol=1e-4)
    recorded = {k: json.loads((o / "result.json").read_text()) for k, o in outs.items()}
    assert recorded["none"]["sampler"] == recorded["default"]["sampler"]
    assert recorded["fast"]["preset"] == "fast"
    for stage in ("sparse_structure", "slat"):
        fast = recorded["fast"]["sampler"][stage]
        assert (fast["steps"], fast["solver"], fast["cfg_mode"], fast["kv_cache"]) == (6, "heun", "batched", True)
        assert "solver" not in recorded["fast_euler"]["sampler"][stage]
        assert "cfg_mode" not in recorded["fast_euler"]["sampler"][stage]
        assert recorded["fast_euler"]["sampler"][stage]["kv_cache"]
    assert recorded["fast_euler"]["sampler"]["slat"]["steps"] == 3
    assert recorded["fast_euler"]["sampler"]["sparse_structure"]["steps"] == 6


def test_fp8_refusals_where_a_gpu_would_qualify(inputs, tiny_model, tmp_path, capsys, monkeypatch):
    """With FP8 available (the check faked): --fp8 refuses other torso dtypes and --low-vram, in one line."""
    monkeypatch.setattr("ss4d.fp8.check_fp8", lambda device: None)
    for extra, pattern in ((["--dtype", "fp32"], "--fp8 runs with bf16 torsos, not --dtype fp32"),
                           (["--low-vram"], "--fp8 and --low-vram cannot be combined")):
        code, _, err = run_cli([inputs / "good", "--model", tiny_model, "-o", tmp_path / "o", "--fp8"] + FAST + extra,
                               capsys)
        assert code == EXIT_BAD_INPUT and len(err.strip().splitlines()) == 1 and pattern in err, err


def test_compile_flag_where_compiling_is_unavailable(inputs, tiny_model, tmp_path, capsys, monkeypatch):
    """--compile without a C++ compiler for inductor: one note, an eager run with the default result."""
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr("shutil.which", lambda name: None)
    outs = []
    for extra in ([], ["--compile"]):
        out = tmp_path / f"o{len(extra)}"
        code, printed, err = run_cli([inputs / "good", "--model", tiny_model, "-o", out, "--render", "none"] + FAST
                                     + extra, capsys)
        assert code == EXIT_OK, err
        outs.append(out)
    assert "--compile: sparse_structure_flow_model not compiled: inductor needs a C++ compiler" in printed
    recorded = json.loads((outs[1] / "result.json").read_text())["model"]["compile"]
    assert "running eagerly" in recorded["sparse_structure_flow_model"]
    for t in range(2):
        ply = f"frame_{t:03d}.ply"
        assert (outs[0] / "gaussians" / ply).read_bytes() == (outs[1] / "gaussians" / ply).read_bytes()


def test_bad_input_table_is_large_enough():
    assert len(BAD_INPUTS) >= 56


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
    assert "('" not in err, "a GenerationError prints as a sentence, not a Python tuple"
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


def test_overwrite_replaces_a_previous_output_and_nothing_else(inputs, tiny_model, tmp_path, capsys, monkeypatch):
    """--overwrite on a previous ss4d output: its files are replaced, the folder's neighbours keep
    every byte; with --render none no (empty) render bar is drawn, even on a terminal."""
    from user_files import plant_user_files, snapshot

    plant_user_files(tmp_path)
    out = tmp_path / "o"
    code, stdout, err = run_cli([inputs / "good", "-o", out, "--model", tiny_model, "--render", "novel"] + FAST, capsys)
    assert code == EXIT_OK, err
    assert "(2 PLY files, 1 video)" in stdout
    assert (out / "renders" / "novel.mp4").is_file()
    neighbours = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("o")}
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    argv = [inputs / "good", "-o", out, "--model", tiny_model, "--overwrite", "--render", "none", "--frames", "2",
            "--resolution", "32"]
    code, stdout, err = run_cli(argv, capsys)
    assert code == EXIT_OK, err
    assert "Rendering" not in err and "0 videos" in stdout
    assert not (out / "renders").exists() and len(list((out / "gaussians").glob("*.ply"))) == 2
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("o")} == neighbours


def test_console_script_subprocess(inputs, tmp_path):
    """The installed entry point: bad input -> exit 2 and one line, no traceback."""
    exe = Path(sys.executable).with_name("ss4d-generate")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "ss4d.cli"]
    env = dict(os.environ, SS4D_MODEL=str(tmp_path / "no_model"))
    p = subprocess.run(cmd + [str(inputs / "good"), "-o", str(tmp_path / "o")], capture_output=True, text=True,
                       env=env, cwd=REPO, timeout=120)
    assert p.returncode == EXIT_BAD_INPUT
    assert "model folder not found" in p.stderr and "SS4D_MODEL" in p.stderr and "Traceback" not in p.stderr


# ------------------------------------------------------------------------------ never lose a user's files (issue 8)
DANGEROUS_OUTPUTS = ["dot", "cwd", "parent_of_cwd", "home", "input_folder", "input_parent", "model_folder", "symlink",
                     "foreign_folder", "previous_output_with_user_file"]


@pytest.mark.parametrize("case", DANGEROUS_OUTPUTS)
def test_overwrite_never_deletes_user_files(case, tiny_model, tmp_path, capsys, monkeypatch):
    """The reported data losses (``-o . --overwrite`` wiped the working folder, ``-o <input>`` the
    frames): every such -o is refused before any work, exit 2, one line, and every byte under the
    test folder (working folder, home, model, input, neighbours) is still there."""
    import shutil

    from user_files import plant_user_files, snapshot

    work = plant_user_files(tmp_path / "work")
    clip = write_frames(work / "clip", disc_rgba(2))
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    plant_user_files(model, "m")
    home = plant_user_files(tmp_path / "home", "h")
    foreign = plant_user_files(tmp_path / "projects", "p")
    (tmp_path / "link").symlink_to(foreign)
    previous = tmp_path / "previous"
    code, _, err = run_cli([clip, "-o", previous, "--model", model, "--render", "none"] + FAST, capsys)
    assert code == EXIT_OK, err
    (previous / "gaussians" / "my_edit.ply").write_text("the user's own file")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    out = {"dot": ".", "cwd": work, "parent_of_cwd": tmp_path, "home": "~", "input_folder": "clip",
           "input_parent": clip.parent, "model_folder": model, "symlink": tmp_path / "link", "foreign_folder": foreign,
           "previous_output_with_user_file": previous}[case]
    before = snapshot(tmp_path)
    code, _, err = run_cli(["clip", "-o", os.path.expanduser(str(out)), "--model", model, "--overwrite"] + FAST, capsys)
    assert code == EXIT_BAD_INPUT, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_demo_resolves_paths_against_the_callers_folder(tiny_model, tmp_path):
    """``python scripts/demo.py -o .`` wiped a checkout: -o is the caller's folder, never forced over."""
    from user_files import plant_user_files, snapshot

    work = plant_user_files(tmp_path / "work")
    before = snapshot(tmp_path)
    demo = [sys.executable, str(REPO / "scripts" / "demo.py"), "--model", str(tiny_model), "--frames", "2"]
    extra = ["--", "--resolution", "32", "--render", "none", "--no-progress"]
    p = subprocess.run(demo + ["-o", "."] + extra, cwd=work, capture_output=True, text=True, timeout=300)
    assert p.returncode == EXIT_BAD_INPUT, p.stderr
    assert snapshot(tmp_path) == before
    p = subprocess.run(demo + ["-o", "run1"] + extra, cwd=work, capture_output=True, text=True, timeout=300)
    assert p.returncode == EXIT_OK, p.stderr
    assert len(list((work / "run1" / "gaussians").glob("*.ply"))) == 2
    p = subprocess.run(demo + ["-o", "run1"] + extra, cwd=work, capture_output=True, text=True, timeout=300)
    assert p.returncode == EXIT_BAD_INPUT and "--overwrite" in p.stderr  # only the default output is replaced
    after = snapshot(tmp_path)
    assert all(after[k] == v for k, v in before.items())


SIGTERM_DRIVER = """
import sys, time
import ss4d.export as export
real = export.save_coords
def slow(*a, **k):
    paths = real(*a, **k)
    print("WRITING", flush=True)
    time.sleep(120)
    return paths
export.save_coords = slow
from ss4d.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_cleans_up_and_says_so(inputs, tiny_model, tmp_path):
    """SIGTERM mid-write (kill, timeout, Docker): exit 143 with a line, no output, no temp folder."""
    import signal

    out = tmp_path / "o"
    p = subprocess.Popen([sys.executable, "-c", SIGTERM_DRIVER, str(inputs / "good"), "-o", str(out), "--model",
                          str(tiny_model)] + FAST, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    for line in p.stdout:
        if "WRITING" in line:
            break
    assert any(p.name.startswith(".o.tmp-") for p in tmp_path.iterdir()), "the run should be mid-write"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert "terminated" in err and len(err.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []


def test_outputs_follow_the_umask(inputs, tiny_model, tmp_path, capsys):
    """Under umask 022 every output folder is 0755 and every file 0644 (mkdtemp/mkstemp would give 0700/0600)."""
    import stat

    old = os.umask(0o022)
    try:
        code, _, err = run_cli([inputs / "good", "-o", tmp_path / "o", "--model", tiny_model] + FAST, capsys)
    finally:
        os.umask(old)
    assert code == EXIT_OK, err
    paths = [tmp_path / "o", *(tmp_path / "o").rglob("*")]
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in paths}
    assert {k for k in modes if k.endswith(".ply")} and {k for k in modes if k.endswith(".mp4")}
    assert {k: m for k, m in modes.items() if m != (0o755 if (tmp_path / k).is_dir() else 0o644)} == {}


def test_nonfinite_result_is_exit_1_naming_the_stage(inputs, tiny_model, tmp_path, capsys, monkeypatch):
    """NaN weights that pass the load check (disabled here) stop at the stage they poison: exit 1."""
    from ss4d import pipeline

    monkeypatch.setattr(pipeline, "check_finite_weights", lambda *a, **k: None)
    code, _, err = run_cli([inputs / "good", "--model", inputs / "model_nan", "-o", tmp_path / "o"] + FAST, capsys)
    assert code == EXIT_INTERNAL, err
    assert "the structured-latent stage produced NaN/inf" in err and "weights" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists() and os.listdir(tmp_path) == []


def test_disk_full_is_one_line_exit_2(inputs, tiny_model, tmp_path, capsys, monkeypatch):
    import errno

    from ss4d import export

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o" / "coords"))

    monkeypatch.setattr(export, "save_coords", full)
    code, _, err = run_cli([inputs / "good", "--model", tiny_model, "-o", tmp_path / "o"] + FAST, capsys)
    assert code == EXIT_BAD_INPUT, err
    assert "No space left on device" in err and "free some disk space" in err and "internal error" not in err
    assert len(err.strip().splitlines()) == 1 and os.listdir(tmp_path) == []


def test_image_over_pixel_limit_is_bad_input(inputs, tiny_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 4)
    code, _, err = run_cli([inputs / "good", "--model", tiny_model, "-o", tmp_path / "o"] + FAST, capsys)
    assert code == EXIT_BAD_INPUT and "too large to read safely" in err and len(err.strip().splitlines()) == 1


def test_version_and_plain_logs(inputs, tiny_model, tmp_path, capsys):
    """--version; without a terminal no carriage-return progress bars reach the log."""
    from ss4d import __version__

    code, out, _ = run_cli(["--version"], capsys)
    assert code == EXIT_OK and out.strip() == f"ss4d-generate {__version__}"
    code, out, err = run_cli([inputs / "good", "--model", tiny_model, "-o", tmp_path / "o", "--frames", "2",
                              "--resolution", "32", "--render", "novel"], capsys)
    assert code == EXIT_OK, err
    assert "\r" not in err and "\r" not in out and "1 video)" in out


def test_default_threads():
    """Idle physical cores, at least 1; OMP_NUM_THREADS wins (measured in scripts/bench_pipeline.py)."""
    from ss4d.threads import default_threads

    env = os.environ.pop("OMP_NUM_THREADS", None)
    try:
        assert default_threads(lambda: 2, lambda: 1.0, lambda: 1.9) == 1      # busy 2-core runner
        assert default_threads(lambda: 2, lambda: 1.0, lambda: 0.0) == 2
        assert default_threads(lambda: 16, lambda: 0.5, lambda: 0.2) == 8     # hyper-threads: physical cores
        assert default_threads(lambda: 16, lambda: 0.5, lambda: 12.0) == 4
        assert default_threads(lambda: 4, lambda: 1.0, lambda: 30.0) == 1
        os.environ["OMP_NUM_THREADS"] = "3"
        assert default_threads(lambda: 16, lambda: 1.0, lambda: 0.0) == 3
    finally:
        os.environ.pop("OMP_NUM_THREADS", None)
        if env is not None:
            os.environ["OMP_NUM_THREADS"] = env


def test_busy_cores_are_those_busy_now_when_the_load_average_still_remembers_a_finished_job():
    """The 1-minute load average lags: a minute after a job on both cores ended it still reads ~0.7, which rounds to
    one busy core. Seen: `make demo` right after `make setup` / the test suite ran on 1 of 2 idle cores (71 s
    instead of 58 s). The busy cores are now the smaller of the load average and the cores busy over a short sample
    of the CPU counters (/proc/stat), so an idle machine gets its cores and a steady job still keeps its own."""
    from ss4d.threads import busy_cores, sampled_busy_cores

    # CPU counters (busy, total jiffies over all cores): 50 of 100 jiffies busy on a 2-core machine = 1 core
    snapshots = iter([(100.0, 1000.0), (150.0, 1100.0)])
    assert sampled_busy_cores(lambda: next(snapshots), lambda s: None, logical=2) == pytest.approx(1.0)
    assert sampled_busy_cores(lambda: None, lambda s: None, logical=2) is None          # no /proc/stat
    assert busy_cores(load=lambda: 1.9, now=lambda: 0.05) == pytest.approx(0.05)         # job just ended
    assert busy_cores(load=lambda: 1.9, now=lambda: 1.8) == pytest.approx(1.8)           # job still running
    assert busy_cores(load=lambda: 0.2, now=lambda: 1.0) == pytest.approx(0.2)           # a burst: the average
    assert busy_cores(load=lambda: 1.9, now=lambda: None) == pytest.approx(1.9)          # no sample: the average
