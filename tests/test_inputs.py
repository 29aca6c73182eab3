"""Input side of the 4D pipeline: reading clips, frame selection, matting, preprocessing, output folders."""
import os

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED, SS4D_FIXTURES, require_dir
from ss4d.errors import InputError
from ss4d.io import FrameSelection, OutputFolder, check_output_dir, read_frames
from ss4d.matting import estimate_background, matte_frames, solid_background_matte
from ss4d.preprocess import crop_box, preprocess_frames, union_bbox

VIDEOS = SHARED / "data" / "videos"
H = W = 64


def disc_frames(n=6, rgba=True, bg=(0, 0, 0)):
    """A red disc moving right; RGBA (transparent background) or RGB on ``bg``."""
    yy, xx = np.mgrid[:H, :W]
    out = []
    for t in range(n):
        inside = (yy - 32) ** 2 + (xx - 20 - 4 * t) ** 2 < 100
        f = np.zeros((H, W, 4 if rgba else 3), np.uint8)
        if not rgba:
            f[:] = bg
        f[inside, :3] = (200, 50, 50)
        if rgba:
            f[inside, 3] = 255
        out.append(f)
    return out


def write_video(path, frames, codec="libx264", pix_in="rgb24", pix_out="yuv420p", fps=8):
    import imageio_ffmpeg

    w = imageio_ffmpeg.write_frames(str(path), (W, H), pix_fmt_in=pix_in, pix_fmt_out=pix_out, codec=codec, fps=fps,
                                    macro_block_size=1, ffmpeg_log_level="error")
    w.send(None)
    for f in frames:
        w.send(np.ascontiguousarray(f))
    w.close()


# ------------------------------------------------------------------------------ reading
def test_mp4_selection_and_fps(tmp_path):
    frames = [np.full((H, W, 3), 10 * t, np.uint8) for t in range(20)]
    write_video(tmp_path / "c.mp4", frames, fps=16)
    clip = read_frames(tmp_path / "c.mp4")
    assert len(clip) == 20 and clip.fps == 16 and clip.kind == "video" and not clip.has_alpha
    assert abs(int(clip.frames[5][0, 0, 0]) - 50) <= 3          # frame order kept
    clip = read_frames(tmp_path / "c.mp4", FrameSelection(start=2, stride=3, num_frames=4))
    assert clip.indices == [2, 5, 8, 11] and clip.fps == pytest.approx(16 / 3)
    clip = read_frames(tmp_path / "c.mp4", FrameSelection(fps=4))      # 16 -> 4 fps: every 4th frame
    assert clip.indices == [0, 4, 8, 12, 16][:4] and clip.fps == 4    # 5 selected -> odd -> last dropped
    assert any("even" in n for n in clip.notes)
    clip = read_frames(tmp_path / "c.mp4", FrameSelection(fps=100))
    assert len(clip) == 20 and any("above the source" in n for n in clip.notes)


def test_default_cap_and_notes(tmp_path):
    write_video(tmp_path / "long.mp4", [np.full((H, W, 3), t % 255, np.uint8) for t in range(40)])
    clip = read_frames(tmp_path / "long.mp4")
    assert len(clip) == 32 and any("first 32" in n for n in clip.notes)
    clip = read_frames(tmp_path / "long.mp4", FrameSelection(num_frames=50))
    assert len(clip) == 40 and any("only 40" in n for n in clip.notes)


def test_webm_and_gif_keep_alpha(tmp_path):
    frames = disc_frames(6)
    write_video(tmp_path / "a.webm", frames, codec="libvpx-vp9", pix_in="rgba", pix_out="yuva420p")
    clip = read_frames(tmp_path / "a.webm")
    assert clip.has_alpha and len(clip) == 6
    assert abs((clip.frames[0][..., 3] > 127).mean() - (frames[0][..., 3] > 0).mean()) < 0.01
    ims = [Image.fromarray(f) for f in frames]
    ims[0].save(tmp_path / "a.gif", save_all=True, append_images=ims[1:], duration=125, loop=0, disposal=2)
    clip = read_frames(tmp_path / "a.gif")
    assert clip.kind == "gif" and clip.has_alpha and len(clip) == 6 and clip.fps == pytest.approx(8, rel=0.1)


def test_folder_natural_order_and_rgba(tmp_path):
    frames = disc_frames(12)
    for t, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"{t}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    clip = read_frames(tmp_path, FrameSelection(stride=1))
    assert clip.names[:3] == ["0.png", "1.png", "2.png"] and clip.names[10] == "10.png"
    assert clip.has_alpha and clip.frames[0].shape == (H, W, 4)
    np.testing.assert_array_equal(clip.frames[11], frames[11])


def test_shared_rgba_folder(tmp_path):
    folder = require_dir(VIDEOS / "rose_rgba", "shared rose_rgba frames")
    clip = read_frames(folder, FrameSelection(num_frames=4, stride=8))
    assert clip.names == ["0.png", "8.png", "16.png", "24.png"] and clip.has_alpha


def test_selection_validation():
    for sel, msg in [(FrameSelection(num_frames=3), "even"), (FrameSelection(num_frames=1), "at least 2"),
                     (FrameSelection(stride=0), "--stride"), (FrameSelection(start=-1), "--start"),
                     (FrameSelection(fps=0), "--fps")]:
        with pytest.raises(InputError, match=msg):
            sel.validate()


# ------------------------------------------------------------------------------ matting
@pytest.mark.parametrize("name", ["dancing_robot_fg", "sighing_frog_fg"])
def test_solid_matte_on_white_clips(name):
    path = VIDEOS / f"{name}.mp4"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    clip = read_frames(path, FrameSelection(num_frames=2, stride=16))
    bg, match, _ = estimate_background(clip.frames)
    assert np.allclose(bg, 1.0) and match > 0.99
    rgba, method = matte_frames(clip.frames)
    assert method == "solid"
    for f in rgba:
        a = f[..., 3]
        assert 0.05 < (a > 127).mean() < 0.5                    # an object, not everything / nothing
        assert a[:4].max() == 0 and a[-4:].max() == 0             # borders are background
        from scipy import ndimage

        assert ndimage.label(a > 127, structure=np.ones((3, 3)))[1] == 1   # the largest component only


def test_solid_matte_recovers_disc_on_coloured_background():
    frames = disc_frames(2, rgba=False, bg=(30, 160, 40))
    alphas = solid_background_matte(frames)
    truth = disc_frames(2)[0][..., 3] > 0
    assert ((alphas[0] > 127) == truth).mean() > 0.99


def test_cluttered_background_names_the_options():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (H, W, 3), dtype=np.uint8) for _ in range(2)]
    with pytest.raises(InputError, match="not a solid colour") as e:
        matte_frames(frames)
    assert "--mask-dir" in str(e.value) and "rembg" in str(e.value) and "RGBA" in str(e.value)


def test_mask_dir(tmp_path):
    frames = disc_frames(4, rgba=False, bg=(255, 255, 255))
    masks = tmp_path / "masks"
    masks.mkdir()
    for t, f in enumerate(disc_frames(4)):
        Image.fromarray(f[..., 3]).save(masks / f"{t}.png")
    rgba, method = matte_frames(frames, mask_dir=masks)
    assert method == "mask-dir"
    np.testing.assert_array_equal(rgba[3][..., 3], disc_frames(4)[3][..., 3])
    with pytest.raises(InputError, match="masks but"):
        matte_frames(frames[:3], mask_dir=masks, source_indices=[0, 1, 7])


def test_register_custom_matting():
    from ss4d.matting import MATTING_METHODS, register_matting

    register_matting("everything", lambda frames: [np.full(f.shape[:2], 255, np.uint8) for f in frames])
    try:
        rgba, method = matte_frames(disc_frames(2, rgba=False), "everything")
        assert method == "everything" and rgba[0][..., 3].min() == 255
    finally:
        MATTING_METHODS.pop("everything")


# ------------------------------------------------------------------------------ preprocessing
def test_preprocess_is_bit_exact_with_official_output():
    folder = require_dir(SS4D_FIXTURES / "tiny_pipeline" / "frames", "SS4D tiny_pipeline frames")
    frames = [Image.open(folder / f"{t}.png") for t in range(6)]
    images, box = preprocess_frames(frames)
    assert box == (2, 6, 57, 62)
    for t, im in enumerate(images):
        ref = np.asarray(Image.open(folder / f"preprocessed_{t}.png"))
        assert im.size == (518, 518)
        np.testing.assert_array_equal(np.asarray(im), ref)


def test_union_bbox_and_crop():
    frames = disc_frames(6)
    x0, y0, x1, y1 = union_bbox([f[..., 3] for f in frames])
    assert (x0, x1) == (11, 49) and (y0, y1) == (23, 41)
    cx0, cy0, cx1, cy1 = crop_box((x0, y0, x1, y1))
    assert cx1 - cx0 == cy1 - cy0 == 45                        # square, 1.2 x 38 px
    with pytest.raises(InputError, match="empty in every frame"):
        union_bbox([np.zeros((4, 4), np.uint8)])


# ------------------------------------------------------------------------------ output folder
def write_result(folder, files):
    """A minimal result.json as ss4d-generate writes it, listing ``files``."""
    import json

    (folder / "result.json").write_text(json.dumps({"command": ["ss4d-generate"], "files": {"other": files}}))


def test_output_folder_is_atomic(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with OutputFolder(out) as tmp:
            (tmp / "half.ply").write_text("x")
            raise RuntimeError("boom")
    assert not out.exists() and os.listdir(tmp_path) == []
    with OutputFolder(out) as tmp:
        (tmp / "a.txt").write_text("1")
        write_result(tmp, ["a.txt"])
    assert (out / "a.txt").read_text() == "1" and sorted(os.listdir(tmp_path)) == ["out"]
    with pytest.raises(InputError, match="--overwrite"):
        OutputFolder(out)
    with OutputFolder(out, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(os.listdir(out)) == ["b.txt"] and sorted(os.listdir(tmp_path)) == ["out"]


def test_output_under_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        check_output_dir(tmp_path / "f" / "out")
    with pytest.raises(InputError, match="is a file"):
        check_output_dir(tmp_path / "f")


# ------------------------------------------------------------------------------ never lose a user's files (issue 8)
def _refusal_cases(tmp_path, monkeypatch):
    """(case, -o path, overwrite, protected, folder whose every byte must survive, message)."""
    from user_files import plant_user_files

    work = plant_user_files(tmp_path / "work")
    clip = work / "clip"
    clip.mkdir()
    for t, f in enumerate(disc_frames(2)):
        Image.fromarray(f).save(clip / f"{t}.png")
    model = plant_user_files(tmp_path / "model", "m")
    home = plant_user_files(tmp_path / "home", "h")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    foreign = plant_user_files(tmp_path / "projects", "p")
    previous = tmp_path / "previous"
    previous.mkdir()
    (previous / "gaussians").mkdir()
    (previous / "gaussians" / "frame_000.ply").write_text("ply")
    write_result(previous, ["gaussians/frame_000.ply"])
    (previous / "my_notes.txt").write_text("added by the user")
    (tmp_path / "link").symlink_to(foreign)
    protected = [("the input", clip), ("the model folder", model)]
    return [
        ("dot", ".", work, "is the current folder"),
        ("cwd_absolute", work, work, "is the current folder"),
        ("parent_of_cwd", tmp_path, tmp_path, "contains the current folder"),
        ("home", "~", home, "is your home folder"),
        ("input_folder", clip, work, "is the input"),
        ("model_folder", model, model, "is the model folder"),
        ("symlink", tmp_path / "link", foreign, "symbolic link"),
        ("foreign_folder", foreign, foreign, "not an ss4d output"),
        ("previous_output_with_user_file", previous, previous, "ss4d did not write \\(my_notes.txt\\)"),
    ], protected


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_output_folder_never_replaces_user_folders(tmp_path, monkeypatch, overwrite):
    """Every dangerous -o is refused (with and without --overwrite) and every byte stays."""
    from user_files import snapshot

    cases, protected = _refusal_cases(tmp_path, monkeypatch)
    before = snapshot(tmp_path)
    for case, out, overwrite_ok, message in [(c, o, True, m) for c, o, _, m in cases]:
        if not overwrite and case in ("foreign_folder", "previous_output_with_user_file"):
            message = "--overwrite"
        out = os.path.expanduser(str(out))
        with pytest.raises(InputError, match=message):
            with OutputFolder(out, overwrite=overwrite, protected=protected) as tmp:
                (tmp / "x.ply").write_text("new")
        assert snapshot(tmp_path) == before, case


def test_overwrite_replaces_a_previous_output_only(tmp_path):
    """A previous ss4d output (every file listed in its result.json) is replaced; its neighbours stay."""
    from user_files import plant_user_files, snapshot

    plant_user_files(tmp_path)
    out = tmp_path / "run1"
    with OutputFolder(out) as tmp:
        (tmp / "gaussians").mkdir()
        (tmp / "gaussians" / "frame_000.ply").write_text("old")
        write_result(tmp, ["gaussians/frame_000.ply"])
    neighbours = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("run1")}
    with OutputFolder(out, overwrite=True) as tmp:
        (tmp / "new.ply").write_text("new")
    assert sorted(os.listdir(out)) == ["new.ply"]
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("run1")} == neighbours


def test_output_name_too_long_is_refused_up_front(tmp_path):
    with pytest.raises(InputError, match="too long"):
        check_output_dir(tmp_path / ("x" * 250))
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------ corrupt video (issue 8 item 5)
def _noise_video(path, n=40):
    rng = np.random.default_rng(0)
    write_video(path, [rng.integers(0, 255, (H, W, 3), dtype=np.uint8) for _ in range(n)])
    return path.read_bytes()


def test_corrupt_frame_is_bad_input_not_garbage(tmp_path):
    """Bytes overwritten mid-stream: ffmpeg would conceal the damage and return 40 frames of garbage."""
    data = bytearray(_noise_video(tmp_path / "c.mp4"))
    rng = np.random.default_rng(1)
    start = len(data) // 3
    data[start:start + 3000] = rng.integers(0, 255, 3000, dtype=np.uint8).tobytes()
    (tmp_path / "corrupt.mp4").write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"frame \d+ of .*corrupt.mp4 could not be decoded"):
        read_frames(tmp_path / "corrupt.mp4", FrameSelection(num_frames=32))


def test_truncated_video_is_reported_as_truncation(tmp_path):
    """A fast-start mp4 cut in half decodes to a shorter clip: say "truncated" (40 expected, N decoded)."""
    import subprocess

    import imageio_ffmpeg

    _noise_video(tmp_path / "c.mp4")
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(tmp_path / "c.mp4"), "-c", "copy",
                    "-movflags", "+faststart", str(tmp_path / "fs.mp4")], check=True)
    data = (tmp_path / "fs.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut.mp4 is truncated.*40 frames expected.*\d+ decoded"):
        read_frames(tmp_path / "cut.mp4", FrameSelection(num_frames=32))
    clip = read_frames(tmp_path / "cut.mp4", FrameSelection(num_frames=4))  # the intact start is usable
    assert len(clip) == 4


def test_audio_only_and_rotated_videos(tmp_path, capfd):
    import subprocess

    import imageio_ffmpeg

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run([exe, "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac",
                    str(tmp_path / "audio.mp4")], check=True)
    with pytest.raises(InputError, match="audio.mp4 has no video stream"):
        read_frames(tmp_path / "audio.mp4")
    subprocess.run([exe, "-v", "error", "-f", "lavfi", "-i", "testsrc=size=96x64:rate=8:duration=1", "-pix_fmt",
                    "yuv420p", str(tmp_path / "wide.mp4")], check=True)
    subprocess.run([exe, "-v", "error", "-display_rotation", "90", "-i", str(tmp_path / "wide.mp4"), "-c", "copy",
                    str(tmp_path / "rotated.mp4")], check=True)
    capfd.readouterr()
    clip = read_frames(tmp_path / "rotated.mp4", FrameSelection(num_frames=2))
    assert clip.size == (64, 96)                                   # ffmpeg applied the rotation
    assert capfd.readouterr().err == ""                            # and nothing was printed about it


# ------------------------------------------------------------------------------ degenerate / mixed frames (8: 7, 8, 11)
def test_tiny_frames_and_tiny_objects_are_refused(tmp_path):
    from ss4d.preprocess import MIN_FRAME_SIZE, MIN_OBJECT_SIZE

    small = tmp_path / "small"
    small.mkdir()
    for t in range(2):
        f = np.zeros((2, 2, 4), np.uint8)
        f[0, 0] = 255
        Image.fromarray(f).save(small / f"{t}.png")
    with pytest.raises(InputError, match=f"2x2 pixels; SS4D needs at least {MIN_FRAME_SIZE}"):
        read_frames(small)
    dot = [np.zeros((H, W, 4), np.uint8) for _ in range(2)]
    for f in dot:
        f[30, 30] = 255
    with pytest.raises(InputError, match=f"object is only 1x1 pixels.*at least {MIN_OBJECT_SIZE}"):
        preprocess_frames(dot)
    with pytest.raises(InputError, match="SS4D needs at least"):
        preprocess_frames([np.full((8, 8, 4), 255, np.uint8)] * 2)


def test_mixed_rgb_and_rgba_frames_are_refused(tmp_path):
    frames = disc_frames(4)
    for t, f in enumerate(frames):
        flat = np.where(f[..., 3:] > 0, f[..., :3], 255).astype(np.uint8)  # flattened onto white, no alpha
        Image.fromarray(f if t != 2 else flat).save(tmp_path / f"{t}.png")
    with pytest.raises(InputError, match="1 of 4 frames have no transparency \\(first: 2.png\\)"):
        read_frames(tmp_path)
    from ss4d.preprocess import to_rgba_arrays

    with pytest.raises(InputError, match="have no transparency"):
        to_rgba_arrays([frames[0], frames[1][..., :3]])


def test_16bit_grayscale_frames_are_scaled_not_clipped(tmp_path):
    for t in range(2):
        g = np.full((H, W), 65535, np.uint16)          # white background
        g[20:40, 20 + 2 * t:40 + 2 * t] = 16448        # a dark square: 16448 / 257 = 64
        Image.fromarray(g).save(tmp_path / f"{t}.png")
    assert Image.open(tmp_path / "0.png").mode.startswith("I")
    clip = read_frames(tmp_path)
    assert clip.frames[0].shape == (H, W, 3) and clip.frames[0][30, 30].tolist() == [64, 64, 64]
    assert clip.frames[0][0, 0].tolist() == [255, 255, 255]
    rgba, method = matte_frames(clip.frames)
    assert method == "solid" and (rgba[0][..., 3] > 127).sum() == 400


def test_uniform_frames_say_no_object_found():
    with pytest.raises(InputError, match="no object found: every frame is just the plain background"):
        matte_frames([np.full((H, W, 3), 255, np.uint8)] * 2)


def test_image_over_pillow_pixel_limit(tmp_path, monkeypatch):
    for t, f in enumerate(disc_frames(2)):
        Image.fromarray(f).save(tmp_path / f"{t}.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", H * W // 4)      # the frames are 4x the limit
    with pytest.raises(InputError, match="too large to read safely.*downscale"):
        read_frames(tmp_path)


# ------------------------------------------------------------------------------ Python API frames (item 12)
def test_api_frames_are_checked(tmp_path):
    from ss4d.preprocess import to_rgba_arrays

    good = disc_frames(2)
    floats = [f.astype(np.float32) / 255 for f in good]
    np.testing.assert_array_equal(to_rgba_arrays(floats)[0], good[0])
    with pytest.raises(InputError, match=r"float frames must be in \[0, 1\], got values in \[0, 255\]"):
        to_rgba_arrays([f.astype(np.float32) for f in good])
    bad = floats[0].copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        to_rgba_arrays([bad, floats[1]])
    paths = []
    for t, f in enumerate(good):
        Image.fromarray(f).save(tmp_path / f"{t}.png")
        paths.append(tmp_path / f"{t}.png")
    for frames in (paths, [str(p) for p in paths]):
        np.testing.assert_array_equal(to_rgba_arrays(frames)[1], good[1])


def test_check_output_dir_sweeps_a_killed_runs_temp_folder(tmp_path):
    """The next run into the same parent removes a SIGKILLed run's temp folder up front (dead pid only)."""
    import subprocess
    import sys

    from trellis_ext.atomic import TEMP_MARK

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    stale = tmp_path / f".out.tmp-{TEMP_MARK}{p.pid}-abcd1234"
    (stale / "gaussians").mkdir(parents=True)
    (stale / "gaussians" / "frame_000.ply").write_text("partial")
    (tmp_path / "keep.txt").write_text("mine")
    check_output_dir(tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["keep.txt"] and (tmp_path / "keep.txt").read_text() == "mine"
