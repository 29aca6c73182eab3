"""Benchmark the pure-PyTorch Gaussian rasteriser on CPU (or any backend / device).

Scene: N Gaussians on a sphere shell of radius 0.4 inside TRELLIS's unit cube, with scales,
opacities and colours in the ranges TRELLIS's decoder produces (scale ~ half a 1/64 voxel),
seen by TRELLIS's default orbit camera (r = 2, fov 40 deg) at the chosen resolution.

    .venv/bin/python scripts/bench_render.py                     # 512^2, 50k Gaussians
    .venv/bin/python scripts/bench_render.py --num 20000 --res 256 --backward
"""
from __future__ import annotations

import argparse
import time

import torch

from trellis_ext.renderers import orbit_camera, rasterize_gaussians

SHELL_RADIUS = 0.4
SHELL_THICKNESS = 0.02
#: log-normal scales around half a voxel of TRELLIS's 64^3 grid.
SCALE_MEDIAN = 0.5 / 64
SCALE_LOG_STD = 0.4
OPACITY_RANGE = (0.3, 1.0)


def make_scene(num: int, seed: int = 0, dtype=torch.float32):
    """Random Gaussians on a sphere shell: means, quats, scales, opacities, colours."""
    gen = torch.Generator().manual_seed(seed)
    direction = torch.randn(num, 3, generator=gen)
    direction = direction / direction.norm(dim=1, keepdim=True)
    radius = SHELL_RADIUS + SHELL_THICKNESS * (torch.rand(num, 1, generator=gen) - 0.5)
    means = direction * radius
    quats = torch.randn(num, 4, generator=gen)
    scales = SCALE_MEDIAN * torch.exp(SCALE_LOG_STD * torch.randn(num, 3, generator=gen))
    lo, hi = OPACITY_RANGE
    opacities = lo + (hi - lo) * torch.rand(num, generator=gen)
    colors = torch.rand(num, 3, generator=gen)
    return [t.to(dtype) for t in (means, quats, scales, opacities, colors)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=50_000, help="number of Gaussians")
    parser.add_argument("--res", type=int, default=512, help="image side in pixels")
    parser.add_argument("--backend", default="torch", choices=("auto", "torch", "gsplat"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="timed forward passes (after 1 warm-up)")
    parser.add_argument("--backward", action="store_true", help="also time one forward+backward")
    parser.add_argument("--save", default="", help="optional PNG path for the rendered image")
    args = parser.parse_args()

    device = torch.device(args.device)
    means, quats, scales, opacities, colors = (t.to(device) for t in make_scene(args.num))
    camera = orbit_camera(yaw=0.5, pitch=0.25, resolution=args.res)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}, "
          f"{args.num} Gaussians, {args.res}x{args.res}, backend {args.backend}")

    def render():
        return rasterize_gaussians(means, quats, scales, opacities, colors, camera, backend=args.backend)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    with torch.no_grad():
        out = render()  # warm-up
        sync()
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = render()
            sync()
            times.append(time.perf_counter() - t0)
    print(f"forward ({out.backend}): best {min(times):.2f} s, mean {sum(times) / len(times):.2f} s; "
          f"coverage {float((out.alpha > 0.5).float().mean()):.3f}")

    if args.backward:
        leaves = [t.clone().requires_grad_(True) for t in (means, scales, opacities, colors)]
        t0 = time.perf_counter()
        out = rasterize_gaussians(leaves[0], quats, leaves[1], leaves[2], leaves[3], camera, backend=args.backend)
        out.rgb.sum().backward()
        sync()
        grad_ok = all(torch.isfinite(t.grad).all() for t in leaves)
        print(f"forward+backward: {time.perf_counter() - t0:.2f} s (finite grads: {grad_ok})")

    if args.save:
        import numpy as np
        from PIL import Image
        img = (out.rgb.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        Image.fromarray(img).save(args.save)
        print(f"saved {args.save}")


if __name__ == "__main__":
    main()
