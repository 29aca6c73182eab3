"""Benchmark the exports: meshing one frame (renders / TSDF fusion / marching cubes + simplification)
at each ``--mesh-quality``, and writing the GLB and ``.splat`` files.

Input: the per-frame PLYs of an ``ss4d-generate`` output folder (``--result outputs/demo``), else a
scene of Gaussians in the shape of TRELLIS's decoder output (``bench_render.make_scene``: a sphere
shell, scales around half a 64³ voxel).

    .venv/bin/python scripts/bench_exports.py                         # CPU, 20k Gaussians
    .venv/bin/python scripts/bench_exports.py --result outputs/demo --device cuda
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_render import make_scene  # noqa: E402
from ss4d.exports import MESH_QUALITY  # noqa: E402
from ss4d.exports import mesh as M  # noqa: E402
from ss4d.exports.glb import write_animated_glb  # noqa: E402
from ss4d.exports.splat import save_splat  # noqa: E402
from trellis_ext.representations import Gaussian, load_ply  # noqa: E402


def scene_gaussian(num: int) -> Gaussian:
    means, quats, scales, opacities, colors = make_scene(num)
    g = Gaussian()
    g.from_xyz(means)
    g.from_rotation(torch.nn.functional.normalize(quats, dim=1))
    g.from_scaling(scales)
    g.from_opacity(opacities[:, None])
    g.from_features((colors - 0.5) / 0.28209479177387814)
    return g


def timed(fn, device):
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--result", help="an ss4d-generate output folder (its gaussians/*.ply)")
    ap.add_argument("--num", type=int, default=20000, help="Gaussians of the synthetic scene (default 20000)")
    ap.add_argument("--frames", type=int, default=2, help="frames to mesh (default 2)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.result:
        plys = sorted((Path(args.result) / "gaussians").glob("*.ply"))[:args.frames]
        frames = [load_ply(p, device=args.device) for p in plys]
    else:
        frames = [scene_gaussian(args.num).to(args.device) for _ in range(args.frames)]
    print(f"{len(frames)} frame(s), {len(frames[0])} Gaussians, device {args.device}, {args.threads} thread(s)")
    for name, s in MESH_QUALITY.items():
        meshes, t_render, t_fuse, t_mc = [], 0.0, 0.0, 0.0
        for g in frames:
            views, dt = timed(lambda: list(M._render_views(g, s)), args.device)
            t_render += dt
            vol, dt = timed(lambda: M.fuse_tsdf(views, s.grid, s.truncation_voxels, s.alpha_threshold, args.device),
                            args.device)
            t_fuse += dt
            (v, f), dt = timed(lambda: M._simplify(*M._marching_cubes(vol), s.target_faces), "cpu")
            t_mc += dt
            meshes.append(M.gaussians_to_mesh(g, s))
        n = len(frames)
        print(f"mesh {name:6s} ({s.views} views {s.image_size}², grid {s.grid}³): per frame "
              f"render {t_render / n:.2f} s, fuse {t_fuse / n:.2f} s, marching cubes + simplify {t_mc / n:.2f} s, "
              f"{sum(len(m.faces) for m in meshes) // n} faces")
    with tempfile.TemporaryDirectory() as tmp:
        _, dt = timed(lambda: write_animated_glb(meshes, os.path.join(tmp, "a.glb"), 8.0), "cpu")
        print(f"GLB of {len(meshes)} frames: {dt:.3f} s, {os.path.getsize(os.path.join(tmp, 'a.glb')) / 1e6:.2f} MB")
        _, dt = timed(lambda: save_splat(frames[0], os.path.join(tmp, "a.splat")), "cpu")
        print(f".splat of one frame: {dt:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
