"""Reading the input clip: a video file, an animated GIF or a folder of frames.

``read_frames(path, FrameSelection(...))`` returns a :class:`VideoFrames` (uint8 ``[H, W, 3|4]``
arrays plus the frame rate and where each frame came from). Every failure a user can fix raises
:class:`~ss4d.errors.InputError` naming the file and what to do.

* **Videos** (``.mp4 .mov .webm .mkv .avi .m4v``): decoded with the ffmpeg binary that the
  ``imageio-ffmpeg`` wheel ships (no system ffmpeg needed), as RGBA, so clips with an alpha channel
  (ProRes 4444, QuickTime RLE, PNG-in-MOV, VP8/VP9 WebM with alpha — decoded with libvpx, which
  keeps the alpha plane) keep it. Decoding stops as soon as the selection is complete. ffmpeg runs
  with ``-xerror``: a decoder error ends the stream, and when a stream ends before the frame count
  the container announces, a second, diagnostic decode tells a **truncated** file (the data ends
  early) from a **corrupt** frame ("frame N of FILE could not be decoded"); both are bad input,
  never garbage frames or a silently shorter clip.
* **GIF**: Pillow; transparency becomes alpha; the frame rate comes from the frame durations.
* **Folder**: every image file (``.png .jpg .jpeg .webp .bmp .tif .tiff``) in natural order
  (``2.png`` before ``10.png``); RGBA PNG sequences keep their alpha; 16-bit grayscale PNGs are
  scaled to 8 bits; images over Pillow's pixel limit are refused with a hint. All frames must have
  the same size and be all transparent (RGBA) or all opaque. A folder has no frame rate (``--fps``
  is refused; outputs use 8 fps, the rate of the official demo videos).

Frame selection (:class:`FrameSelection`), applied in this order:

1. ``start``: skip the first ``start`` source frames;
2. ``fps``: resample to this rate by taking the nearest earlier-or-equal source frame
   (never upsamples: a rate above the source's is capped at the source's, with a note);
3. ``stride``: keep every ``stride``-th of those;
4. ``num_frames``: keep the first N (default: all, at most ``max_frames`` = 32).

**Even-T rule.** SS4D's SLat flow packs frames in pairs, so a clip needs an even number of frames,
at least 2. An explicit odd ``num_frames`` is refused; when the selection itself yields an odd
count, the last frame is dropped (with a note); fewer than 2 frames is an error.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..preprocess import check_frame_size, image_to_array, refuse_mixed_alpha, uses_alpha

__all__ = ["FrameSelection", "VideoFrames", "read_frames", "list_frame_files", "natural_key",
           "VIDEO_EXTENSIONS", "GIF_EXTENSIONS", "IMAGE_EXTENSIONS", "DEFAULT_MAX_FRAMES", "FOLDER_FPS",
           "MIN_FRAMES"]

VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v")
GIF_EXTENSIONS = (".gif",)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
#: Frames used when ``num_frames`` is not given (the official demo's clip length).
DEFAULT_MAX_FRAMES = 32
#: Output frame rate for inputs without one (frame folders): the official ``test.py`` writes 8 fps.
FOLDER_FPS = 8.0
#: Fewest frames a clip may have (one frame pair).
MIN_FRAMES = 2
#: ffmpeg decoders that keep the alpha plane of VP8/VP9 WebM (the native ones drop it).
ALPHA_DECODERS = {"vp9": "libvpx-vp9", "vp8": "libvpx"}
#: ffmpeg options for every decode: stop at the first decoder error instead of concealing it.
STRICT_DECODE = ("-xerror",)
#: Frames a decoded stream may fall short of the container's duration x rate without a note.
FRAME_COUNT_SLACK = 1
#: ffmpeg log lines that mean the file ends before its own index says (demuxer, not decoder).
TRUNCATION_MARKERS = ("partial file", "Packet corrupt", "corrupt input packet")
#: An MP4/MOV whose index ("moov" box, often written last) is missing: truncated if it starts like one.
MISSING_INDEX_MARKER = "moov atom not found"
MP4_SIGNATURE, MP4_SIGNATURE_OFFSET = b"ftyp", 4
#: ffmpeg log lines that mean the file holds no video stream.
NO_VIDEO_MARKERS = ("does not contain any stream", "matches no streams", "no video stream")
IMAGEIO_FFMPEG_LOGGER = "imageio_ffmpeg"
#: "[h264 @ 0x55...] " in front of an ffmpeg log line.
FFMPEG_LOG_PREFIX = re.compile(r"^(\[[^\]]*\]\s*)+")
#: Seconds the diagnostic decode of a broken video may take.
DIAGNOSE_TIMEOUT_S = 120
SUPPORTED = f"a video ({' '.join(VIDEO_EXTENSIONS)}), an animated .gif, or a folder of frames (.png/.jpg)"


@dataclass
class FrameSelection:
    """Which source frames to use (see the module docstring for the order and the even-T rule)."""

    start: int = 0
    stride: int = 1
    fps: Optional[float] = None
    num_frames: Optional[int] = None
    max_frames: int = DEFAULT_MAX_FRAMES

    def validate(self) -> "FrameSelection":
        if self.start < 0:
            raise InputError(f"--start must be >= 0, got {self.start}", "give a source frame index such as 0")
        if self.stride < 1:
            raise InputError(f"--stride must be >= 1, got {self.stride}", "use 1 for every frame, 2 for every other")
        if self.fps is not None and not (self.fps > 0 and math.isfinite(self.fps)):
            raise InputError(f"--fps must be a positive number, got {self.fps}", "e.g. --fps 8")
        if self.num_frames is not None:
            if self.num_frames < MIN_FRAMES:
                raise InputError(f"--frames must be at least {MIN_FRAMES}, got {self.num_frames}",
                                 "SS4D needs at least one pair of frames; e.g. --frames 8")
            if self.num_frames % 2:
                raise InputError(f"--frames must be even, got {self.num_frames}",
                                 f"SS4D packs frames in pairs; use --frames {self.num_frames - 1} "
                                 f"or {self.num_frames + 1}")
        if self.max_frames < MIN_FRAMES:
            raise InputError(f"max_frames must be >= {MIN_FRAMES}, got {self.max_frames}")
        return self

    @property
    def limit(self) -> int:
        return self.num_frames if self.num_frames is not None else self.max_frames


@dataclass
class VideoFrames:
    """Decoded, selected frames.

    Attributes:
        frames: uint8 arrays ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA), all the same size.
        fps: frame rate of the *selected* sequence (source rate / sampling step).
        source: the input path. kind: ``"video" | "gif" | "folder"``.
        indices: source frame index of each selected frame.
        names: file name of each frame (folders) or ``"frame_<index>"``.
        source_fps: the input's own rate (None for folders).
        notes: human-readable remarks (frames dropped, caps applied) for the CLI to print.
    """

    frames: List[np.ndarray]
    fps: float
    source: str
    kind: str
    indices: List[int]
    names: List[str]
    source_fps: Optional[float] = None
    notes: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def size(self) -> Tuple[int, int]:
        """(width, height)."""
        h, w = self.frames[0].shape[:2]
        return w, h

    @property
    def has_alpha(self) -> bool:
        """True when the frames carry a non-trivial alpha channel."""
        return bool(self.frames) and self.frames[0].shape[-1] == 4


def natural_key(name: str):
    """Sort key that orders ``2.png`` before ``10.png``."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def list_frame_files(folder: Path) -> List[Path]:
    """Image files in ``folder`` (not recursive), natural order; hidden files ignored."""
    return sorted((p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS),
                  key=lambda p: natural_key(p.name))


def _step(selection: FrameSelection, source_fps: Optional[float], notes: List[str]) -> float:
    """Source frames per selected frame (before stride handling of the cap)."""
    step = 1.0
    if selection.fps is not None:
        if source_fps is None:
            raise InputError("--fps needs an input with a frame rate, and a frame folder has none",
                             "use --stride to subsample a folder")
        if selection.fps > source_fps:
            notes.append(f"--fps {selection.fps:g} is above the source's {source_fps:g} fps; "
                         f"using every source frame")
        else:
            step = source_fps / selection.fps
    return step * selection.stride


def _wanted_indices(selection: FrameSelection, step: float) -> Iterator[int]:
    k = 0
    while True:
        yield selection.start + int(math.floor(k * step + 1e-9))
        k += 1


def _select(stream: Iterator[np.ndarray], selection: FrameSelection,
            step: float) -> Tuple[List[np.ndarray], List[int], bool, int]:
    """Consume ``stream`` (source frames in order) and keep the selected ones.

    Returns (frames, source indices, more_available, source frames seen)."""
    wanted = _wanted_indices(selection, step)
    target = next(wanted)
    frames, indices = [], []
    seen = 0
    limit = selection.limit
    for i, frame in enumerate(stream):
        seen = i + 1
        if i < target:
            continue
        if len(frames) == limit:
            return frames, indices, True, seen   # one more frame exists beyond the selection
        frames.append(frame)
        indices.append(i)
        target = next(wanted)
        while target <= i:                       # duplicate targets cannot happen (step >= 1)
            target = next(wanted)
    return frames, indices, False, seen


def _finish(frames: List[np.ndarray], indices: List[int], names: List[str], more: bool, seen: int,
            selection: FrameSelection, path: str, kind: str, fps: float, source_fps: Optional[float],
            notes: List[str]) -> VideoFrames:
    if not frames:
        if seen == 0:
            raise InputError(f"{path} contains no frames", f"give {SUPPORTED} with at least 2 frames")
        raise InputError(f"no frames left after selection: {path} has {seen} frames and --start is "
                         f"{selection.start}", f"use a --start below {seen}")
    if selection.num_frames is not None and len(frames) < selection.num_frames:
        notes.append(f"asked for {selection.num_frames} frames but only {len(frames)} are available after "
                     f"--start/--fps/--stride; using {len(frames) - len(frames) % 2}")
    elif selection.num_frames is None and more:
        notes.append(f"using the first {len(frames)} selected frames (default cap {selection.max_frames}); "
                     f"pass --frames N or --stride K to cover more of the clip")
    if len(frames) < MIN_FRAMES:
        raise InputError(f"only {len(frames)} frame selected from {path}; SS4D needs at least {MIN_FRAMES} "
                         f"(an even number)", "use a longer clip or lower --start/--stride/--fps")
    if len(frames) % 2:
        notes.append(f"dropped the last frame: SS4D needs an even number of frames (it packs frame pairs), "
                     f"{len(frames)} were selected")
        frames, indices, names = frames[:-1], indices[:-1], names[:-1]
    sizes = {f.shape[:2] for f in frames}
    if len(sizes) > 1:
        raise InputError(f"frames of {path} have different sizes {sorted(sizes)}",
                         "resize all frames to one size")
    check_frame_size(frames[0].shape[1], frames[0].shape[0], f"the frames of {path}")
    refuse_mixed_alpha(frames, names)
    frames = _normalise_channels(frames)
    return VideoFrames(frames=frames, fps=fps, source=path, kind=kind, indices=indices, names=names,
                       source_fps=source_fps, notes=notes)


def _normalise_channels(frames: List[np.ndarray]) -> List[np.ndarray]:
    """All RGBA if the frames have a non-opaque alpha (all or none do: refuse_mixed_alpha), otherwise all RGB."""
    has_alpha = any(uses_alpha(f) for f in frames)
    out = []
    for f in frames:
        if f.ndim == 2:
            f = np.repeat(f[..., None], 3, axis=-1)
        if has_alpha:
            if f.shape[-1] == 3:
                f = np.concatenate([f, np.full(f.shape[:2] + (1,), 255, np.uint8)], axis=-1)
        else:
            f = f[..., :3]
        out.append(np.ascontiguousarray(f, dtype=np.uint8))
    return out


# ------------------------------------------------------------------------------------ readers
class _FFmpegFrames:
    """Iterator over RGBA frames of an ffmpeg reader; ``close()`` stops the ffmpeg process."""

    def __init__(self, path: str, gen, width: int, height: int):
        self.path, self.gen, self.w, self.h = path, gen, width, height

    def __iter__(self) -> Iterator[np.ndarray]:
        try:
            for buf in self.gen:
                yield np.frombuffer(buf, np.uint8).reshape(self.h, self.w, 4)
        except InputError:
            raise
        except Exception as e:  # truncated streams fail mid-way
            lines = [ln for ln in str(e).strip().splitlines() if ln.strip()] or [type(e).__name__]
            raise InputError(f"{self.path} is corrupt: decoding stopped ({lines[-1].strip()[:200]})",
                             "re-encode or re-download the video") from None
        finally:
            self.close()

    def close(self) -> None:
        self.gen.close()


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _starts_like_mp4(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(MP4_SIGNATURE_OFFSET + len(MP4_SIGNATURE))
    return head[MP4_SIGNATURE_OFFSET:] == MP4_SIGNATURE


def _truncated_error(path: str, detail: str) -> InputError:
    return InputError(f"{path} is truncated: the file ends before the data its container announces ({detail})",
                      "the download or copy was probably cut short; get the complete file again")


def _ffmpeg_stream(path: str, input_params: Sequence[str] = ()) -> Tuple[dict, _FFmpegFrames]:
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(path, pix_fmt="rgba", bpp=4, input_params=list(STRICT_DECODE) + list(input_params))
    try:
        with _quiet_logger(IMAGEIO_FFMPEG_LOGGER):  # it warns on rotated videos, which ffmpeg rotates for us
            meta = next(gen)
    except StopIteration:
        raise InputError(f"cannot decode {path}: ffmpeg found no video stream",
                         f"give {SUPPORTED}") from None
    except Exception as e:  # imageio-ffmpeg raises IOError/RuntimeError with ffmpeg's log
        gen.close()
        text = str(e)
        last = [ln for ln in text.strip().splitlines() if ln.strip()]
        detail = last[-1].strip() if last else type(e).__name__
        if any(m in text for m in NO_VIDEO_MARKERS):
            raise InputError(f"{path} has no video stream (an audio-only file?)", f"give {SUPPORTED}") from None
        if MISSING_INDEX_MARKER in text and _starts_like_mp4(path):
            raise _truncated_error(path, "its index is missing") from None
        raise InputError(f"cannot decode {path} as a video (ffmpeg: {detail[:200]})",
                         "check that the file is a complete, playable video, or re-encode it "
                         "(e.g. ffmpeg -i in.mov out.mp4)") from None
    if meta.get("size") is None:
        gen.close()
        raise InputError(f"{path} has no video stream (an audio-only file?)", f"give {SUPPORTED}")
    w, h = meta["size"]
    return meta, _FFmpegFrames(path, gen, w, h)


def _diagnose(path: str, input_params: Sequence[str]) -> Tuple[int, str]:
    """Decode the whole video once more, discarding frames: (ffmpeg's exit code, its warnings)."""
    import subprocess

    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "warning", *STRICT_DECODE,
           *input_params, "-i", path, "-map", "0:v:0", "-f", "null", "-"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=DIAGNOSE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return 0, ""
    return p.returncode, p.stderr


def _check_complete(path: str, meta: dict, seen: int, input_params: Sequence[str], notes: List[str]) -> None:
    """The stream ended after ``seen`` frames: a decoder error or truncation is an InputError; a
    stream merely shorter than the container's duration x rate gets a note."""
    fps, duration = float(meta.get("fps") or 0), float(meta.get("duration") or 0)
    expected = int(round(fps * duration))
    if expected and seen + FRAME_COUNT_SLACK >= expected:
        return
    code, log = _diagnose(path, input_params)
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    if any(m in log for m in TRUNCATION_MARKERS):
        raise _truncated_error(path, f"{expected} frames expected from its duration and rate, {seen} decoded")
    if code != 0 or lines:
        detail = f" (ffmpeg: {FFMPEG_LOG_PREFIX.sub('', lines[0])[:200]})" if lines else ""
        raise InputError(f"frame {seen} of {path} could not be decoded{detail}",
                         "the file is corrupt; re-encode or re-download it")
    if expected:
        notes.append(f"{path}'s container announces {expected} frames but its video stream holds {seen}")


def _read_video(path: str, selection: FrameSelection) -> VideoFrames:
    meta, stream = _ffmpeg_stream(path)
    decoder = ALPHA_DECODERS.get(str(meta.get("codec", "")).split(" ")[0])
    params: List[str] = []
    if decoder is not None:  # VP8/VP9: the native decoder drops the alpha plane
        stream.close()
        params = ["-c:v", decoder]
        meta, stream = _ffmpeg_stream(path, params)
    source_fps = float(meta.get("fps") or 0) or None
    notes: List[str] = []
    step = _step(selection, source_fps, notes)
    try:
        frames, indices, more, seen = _select(iter(stream), selection, step)
    finally:
        stream.close()
    if not more:
        _check_complete(path, meta, seen, params, notes)
    fps = (source_fps or FOLDER_FPS) / step
    names = [f"frame_{i:05d}" for i in indices]
    return _finish(frames, indices, names, more, seen, selection, path, "video", fps, source_fps, notes)


def _read_gif(path: str, selection: FrameSelection) -> VideoFrames:
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"cannot read {path} as a GIF ({e})", "check the file or convert it to .mp4") from None
    durations = []

    def stream() -> Iterator[np.ndarray]:
        try:
            for frame in ImageSequence.Iterator(img):
                durations.append(frame.info.get("duration", 0) or 0)
                yield np.asarray(frame.convert("RGBA"))
        except (OSError, EOFError) as e:
            raise InputError(f"{path} is corrupt ({e})", "re-export the GIF") from None

    # the GIF's rate is known only from its frame durations; read the first one up front
    first = img.info.get("duration", 0) or 0
    source_fps = 1000.0 / first if first > 0 else None
    notes: List[str] = []
    step = _step(selection, source_fps, notes)
    frames, indices, more, seen = _select(stream(), selection, step)
    fps = (source_fps or FOLDER_FPS) / step
    names = [f"frame_{i:05d}" for i in indices]
    return _finish(frames, indices, names, more, seen, selection, path, "gif", fps, source_fps, notes)


def _read_folder(path: str, selection: FrameSelection) -> VideoFrames:
    from PIL import Image, UnidentifiedImageError

    folder = Path(path)
    files = list_frame_files(folder)
    if not files:
        others = [p.name for p in folder.iterdir() if not p.name.startswith(".")][:3]
        what = f" (found {', '.join(others)})" if others else " (it is empty)"
        raise InputError(f"folder {path} has no image frames{what}",
                         f"put the frames there as {'/'.join(IMAGE_EXTENSIONS[:3])} files named in order "
                         f"(0.png, 1.png, ...), or give a video file")

    def stream() -> Iterator[np.ndarray]:
        for f in files:
            try:
                with Image.open(f) as im:
                    im.load()
                    yield image_to_array(im)
            except Image.DecompressionBombError as e:
                raise InputError(f"frame {f} is too large to read safely ({e})",
                                 "downscale the frames (SS4D works at 518x518), e.g. to at most 4096 pixels "
                                 "a side") from None
            except (UnidentifiedImageError, OSError, SyntaxError) as e:
                raise InputError(f"cannot read frame {f} ({type(e).__name__}: {e})",
                                 "replace or remove the broken file") from None

    notes: List[str] = []
    step = _step(selection, None, notes)
    frames, indices, more, seen = _select(stream(), selection, step)
    names = [files[i].name for i in indices]
    return _finish(frames, indices, names, more, seen, selection, path, "folder", FOLDER_FPS / step, None, notes)


def read_frames(path, selection: Optional[FrameSelection] = None) -> VideoFrames:
    """Read and select the frames of ``path`` (video file, ``.gif`` or folder of frames)."""
    selection = (selection or FrameSelection()).validate()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"input not found: {path}", f"give the path of {SUPPORTED}")
    if os.path.isdir(path):
        if not os.access(path, os.R_OK | os.X_OK):
            raise InputError(f"cannot read folder {path} (permission denied)", "check its permissions")
        return _read_folder(path, selection)
    if not os.access(path, os.R_OK):
        raise InputError(f"cannot read {path} (permission denied)", "check the file's permissions")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path} is empty (0 bytes)", "the download or copy probably failed; get the file again")
    ext = os.path.splitext(path)[1].lower()
    if ext in GIF_EXTENSIONS:
        return _read_gif(path, selection)
    if ext in VIDEO_EXTENSIONS:
        return _read_video(path, selection)
    if ext in IMAGE_EXTENSIONS:
        raise InputError(f"{path} is a single image, but SS4D turns a clip of at least {MIN_FRAMES} frames "
                         f"into 4D", "give a video, or a folder holding the frames as images")
    raise InputError(f"unsupported input type {ext or '(no extension)'!r}: {path}", f"give {SUPPORTED}")
