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
def test_output_folder_is_atomic(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with OutputFolder(out) as tmp:
            (tmp / "half.ply").write_text("x")
            raise RuntimeError("boom")
    assert not out.exists() and os.listdir(tmp_path) == []
    with OutputFolder(out) as tmp:
        (tmp / "a.txt").write_text("1")
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
