"""Benchmark the dataset builder: per-step time per frame, images/s, and disk per frame.

1. Builds a small dataset from ``inputs`` (default: the shared assets) in a temporary folder and
   prints, per step, the seconds per frame and the images per second (render: views, cond: one
   conditioning frame, features: views through DINOv2), plus the bytes per frame each step writes.
2. Times DINOv2 alone (``--dinov2``; default the real ViT-L/14-reg architecture with random weights:
   the same compute as the released weights) per precision and batch size: images/s. On CUDA the
   builder runs it in bfloat16 (``--feature-dtype auto``).

    .venv/bin/python scripts/bench_data.py                              # CPU: torch renderer, 8 frames x 8 views
    .venv/bin/python scripts/bench_data.py --renderer blender --views 150 --resolution 512 --samples 64
    .venv/bin/python scripts/bench_data.py --skip-build --dinov2-batch 16 --dinov2-images 64   # on a GPU

docs/data.md turns these figures into the cost of a 16,000-asset build.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ss4d.data.build import DatasetBuilder, BuildConfig
from ss4d.data.render import RenderSettings

REPO = Path(__file__).resolve().parents[1]
DEFAULT_INPUTS = REPO.parent / "shared" / "data" / "assets"
STEP_FOLDERS = {"mesh": "mesh", "voxelize": "voxels", "render": "renders", "cond": "cond", "features": "features",
                "ss_latent": "ss_latents", "latent": "latents"}
DINOV2_WARMUP = 1


def images_per_frame(step: str, views: int) -> int:
    return {"render": views, "features": views, "cond": 1}.get(step, 0)


def folder_bytes(out: Path, sub: str) -> int:
    return sum(p.stat().st_size for p in (out / "clips").glob(f"*/{sub}/**/*") if p.is_file())


def bench_build(a) -> None:
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        out = Path(tmp) / "ds"
        render = RenderSettings(num_views=a.views, resolution=a.resolution, cond_resolution=a.resolution,
                                samples=a.samples, ssaa=1, cond_video=False)
        cfg = BuildConfig(output=out, frames=a.frames, render=render, renderer=a.renderer,
                          feature_model=a.feature_model or None, device=a.device, progress=False)
        t0 = time.perf_counter()
        s = DatasetBuilder(cfg).run([str(p) for p in a.inputs])
        wall = time.perf_counter() - t0
        frames = max(s.frames, 1)
        print(f"build: {s.clips_ok} clips, {s.frames} frames, {a.views} views at {a.resolution}^2, renderer "
              f"{a.renderer}, features {a.feature_model}, device {a.device}, torch threads "
              f"{torch.get_num_threads()}: {wall:.1f} s")
        print(f"{'step':<10} {'s total':>8} {'s/frame':>8} {'images/s':>9} {'KiB/frame':>10}")
        for step, sec in s.step_seconds.items():
            if step not in s.steps_run:  # nothing to do (e.g. no encoder given; cond done with render)
                continue
            n_img = images_per_frame(step, a.views) * frames
            rate = f"{n_img / sec:9.1f}" if n_img and sec > 0 else f"{'-':>9}"
            kib = folder_bytes(out, STEP_FOLDERS[step]) / frames / 1024
            print(f"{step:<10} {sec:8.2f} {sec / frames:8.3f} {rate} {kib:10.1f}")
        if s.failures:
            print(f"failures: {s.failures}")


def bench_dinov2(a) -> None:
    from ss4d.conditioning.dinov2 import load_dinov2

    device = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = a.dinov2_dtypes or (["float32", "bfloat16", "float16"] if device.startswith("cuda") else ["float32"])
    for dt in dtypes:
        enc = load_dinov2(a.dinov2, device=device, dtype=getattr(torch, dt))
        images = torch.rand(a.dinov2_images, 3, a.resolution, a.resolution)
        for _ in range(DINOV2_WARMUP):
            enc.patch_features(images[: a.dinov2_batch])
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(0, len(images), a.dinov2_batch):
            enc.patch_features(images[i:i + a.dinov2_batch])
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        sec = time.perf_counter() - t0
        print(f"DINOv2 {a.dinov2} {dt} on {device}, batch {a.dinov2_batch}: {len(images) / sec:.2f} images/s "
              f"({sec / len(images) * 1000:.0f} ms/image)")
        del enc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("inputs", nargs="*", type=Path, default=[DEFAULT_INPUTS])
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--views", type=int, default=8)
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--samples", type=int, default=16, help="Cycles samples (Blender renderer)")
    p.add_argument("--renderer", choices=("torch", "blender"), default="torch")
    p.add_argument("--feature-model", default="tiny-random", help="DINOv2 source of the build ('' = no features)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy 2-core box)")
    p.add_argument("--skip-build", action="store_true")
    p.add_argument("--dinov2", default="random-vitl14-reg", help="DINOv2 source for the model-only timing")
    p.add_argument("--dinov2-images", type=int, default=4)
    p.add_argument("--dinov2-batch", type=int, default=4)
    p.add_argument("--dinov2-dtypes", nargs="*", default=None)
    p.add_argument("--skip-dinov2", action="store_true")
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    if not a.skip_build:
        bench_build(a)
    if not a.skip_dinov2:
        bench_dinov2(a)


if __name__ == "__main__":
    main()
