#!/usr/bin/env python
"""Peak memory and time of the SS4D flow models at T = 8 / 16 / 32 frames (random weights).

On CUDA: the full-size released configs (``configs/ss4d/*.json``), bf16 autocast by default,
forward (``--backward`` adds a backward pass), peak ``torch.cuda.max_memory_allocated``.
Without CUDA: says so, and runs the tiny fixture-sized configs on CPU (peak RSS growth) so the
script still exercises the same code paths. Figures are printed, never asserted.

    python scripts/bench_models_memory.py [--frames 8 16 32] [--dtype bf16|fp16|fp32] [--backward]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from ss4d.tiny import TINY_4D_CONFIGS  # noqa: E402  (importing ss4d.tiny registers the 4D classes)
from trellis_ext.models import build_model  # noqa: E402
from trellis_ext.pipelines.tiny import TINY_COND_TOKENS  # noqa: E402
from trellis_ext.sparse import SparseTensor  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
COND_TOKENS = 1374            # DINOv2 ViT-L/14-reg tokens at 518²
VOXELS_PER_FRAME = 20000      # a typical TRELLIS object at 64³
TINY_VOXELS_PER_FRAME = 300
TINY_FLOW_4D = {"ss": TINY_4D_CONFIGS["sparse_structure_flow_model"], "slat": TINY_4D_CONFIGS["slat_flow_model"]}


def load_config(name: str):
    with open(os.path.join(REPO, "configs", "ss4d", name + ".json"), encoding="utf-8") as f:
        return json.load(f)


def random_voxels(frames: int, per_frame: int, resolution: int, gen: torch.Generator) -> torch.Tensor:
    """A shell of ~per_frame voxels per frame, moving slightly over time: [N, 4] (t, x, y, z)."""
    out = []
    r = resolution
    for t in range(frames):
        pts = torch.randn(per_frame * 2, 3, generator=gen)
        pts = pts / pts.norm(dim=1, keepdim=True) * (0.35 * r) + r / 2 + t * 0.1
        xyz = torch.unique(pts.long().clamp(0, r - 1), dim=0)[:per_frame]
        out.append(torch.cat([torch.full((len(xyz), 1), t), xyz], 1))
    return torch.cat(out).int()


def measure(fn, device: str):
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return time.perf_counter() - start, peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--backward", action="store_true", help="also run a backward pass (training memory)")
    ap.add_argument("--voxels", type=int, default=None, help="voxels per frame for the SLat flow")
    args = ap.parse_args()

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if cuda:
        configs = {"ss": load_config("ss_flow_video_4d"), "slat": load_config("slat_flow_video_4d")}
        voxels, cond_tokens, dtype = args.voxels or VOXELS_PER_FRAME, COND_TOKENS, DTYPES[args.dtype]
        print(f"# {torch.cuda.get_device_name()}: full-size released configs, {args.dtype} autocast")
    else:
        configs = TINY_FLOW_4D
        voxels, cond_tokens, dtype = args.voxels or TINY_VOXELS_PER_FRAME, TINY_COND_TOKENS, torch.float32
        print("# no CUDA device: full-size figures need a GPU; running the tiny configs on CPU (fp32, peak RSS growth)")
    gen = torch.Generator().manual_seed(0)
    for key, cfg in configs.items():
        cfg = {"name": cfg["name"], "args": {**cfg["args"], "use_fp16": False, "use_checkpoint": args.backward}}
        model = build_model(cfg, source=key).to(device)
        model.train(args.backward)
        c = cfg["args"]
        for frames in args.frames:
            cond = torch.randn(frames, cond_tokens, c["cond_channels"], generator=gen).to(device)
            t = torch.full((frames,), 500.0, device=device)
            if key == "ss":
                r = c["resolution"]
                x = torch.randn(frames, c["in_channels"], r, r, r, generator=gen).to(device)
            else:
                coords = random_voxels(frames, voxels, c["resolution"], gen).to(device)
                x = SparseTensor(torch.randn(len(coords), c["in_channels"], generator=gen).to(device), coords)

            def step(model=model, x=x, t=t, cond=cond, frames=frames):
                with torch.autocast(device_type=device, dtype=dtype, enabled=dtype != torch.float32), \
                        torch.set_grad_enabled(args.backward):
                    out = model(x, t, cond, num_frames=frames)
                    if args.backward:
                        (out.feats if isinstance(out, SparseTensor) else out).float().square().mean().backward()

            try:
                secs, peak = measure(step, device)
                print(f"{cfg['name']:28s} T={frames:3d}  {'fwd+bwd' if args.backward else 'fwd'}  "
                      f"{secs:8.2f} s  peak {peak / 2**30:8.2f} GiB")
            except torch.OutOfMemoryError:
                print(f"{cfg['name']:28s} T={frames:3d}  out of memory")
                torch.cuda.empty_cache()
        del model
    return 0


if __name__ == "__main__":
    sys.exit(main())
