#!/usr/bin/env python
"""Throughput of the sparse-op backends at TRELLIS-like sizes, one section per op family.

    python scripts/bench_backends.py                 # every section
    python scripts/bench_backends.py conv --quick    # one section, small sizes
    python scripts/bench_backends.py --device cuda --dtype float16

Each section times every backend available for the chosen device and prints one line per
(backend, config): milliseconds per call (median) and voxels per second.

Adding a section: write ``def bench_<name>(args) -> None`` (use :func:`shell_tensor`,
:func:`time_call`, :func:`report`), then add it to ``SECTIONS``; extra options go in
:func:`build_parser`.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trellis_ext.sparse import SparseTensor  # noqa: E402
from trellis_ext.sparse.conv import SparseConv3d, available_backends, get_neighbor_map  # noqa: E402

GRID_RESOLUTION = 64          # SLat grid of TRELLIS
SHELL_RADIUS_FRACTION = 0.4   # shell radius relative to the grid size
CONV_KERNEL = 3               # TRELLIS res-block convs are 3^3 submanifold
FULL = {"voxels": 20_000, "channels": [128, 1024], "iters": 2}
QUICK = {"voxels": 5_000, "channels": [128, 256], "iters": 2}
CUDA_WARMUP = 3               # untimed calls before timing on CUDA (library init, autotuning)
CPU_WARMUP = 0                # index structures are prebuilt, so CPU calls are steady from the start
MS_PER_S = 1e3


# ------------------------------------------------------------------------------- utilities
def shell_coords(num_voxels: int, resolution: int = GRID_RESOLUTION, batch_size: int = 1,
                 device: str = "cpu") -> torch.Tensor:
    """[batch_size * num_voxels, 4] int32 coords: per item the ``num_voxels`` voxels of a
    ``resolution``^3 grid closest to a centred sphere (a surface-like shell, as SLat voxels)."""
    axis = torch.arange(resolution, dtype=torch.float32)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    centre = (resolution - 1) / 2
    dist = ((grid - centre).norm(dim=1) - SHELL_RADIUS_FRACTION * resolution).abs()
    keep = torch.argsort(dist)[:num_voxels].sort().values
    xyz = grid[keep].int()
    items = [torch.cat([torch.full((len(xyz), 1), b, dtype=torch.int32), xyz], 1) for b in range(batch_size)]
    return torch.cat(items).to(device)


def shell_tensor(num_voxels: int, channels: int, dtype: torch.dtype, device: str, batch_size: int = 1) -> SparseTensor:
    coords = shell_coords(num_voxels, batch_size=batch_size, device=device)
    feats = torch.randn(coords.shape[0], channels, dtype=dtype, device=device)
    return SparseTensor(feats, coords)


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_call(fn: Callable[[], object], device: str, iters: int, warmup: int) -> float:
    """Median wall time of ``fn()`` in milliseconds (CUDA synchronised)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * MS_PER_S)
    return statistics.median(times)


def report(section: str, backend: str, config: str, ms: float, voxels: int) -> None:
    rate = voxels / (ms / MS_PER_S) if ms > 0 else float("inf")
    print(f"{section:<10} {backend:<8} {config:<34} {ms:10.2f} ms {rate:12.4g} voxels/s", flush=True)


# -------------------------------------------------------------------------------- sections
def bench_conv(args) -> None:
    """Submanifold conv 3^3, C -> C, forward (and backward with --backward), per backend."""
    sizes = QUICK if args.quick else FULL
    voxels = args.voxels or sizes["voxels"]
    channels = args.channels or sizes["channels"]
    iters = args.iters or sizes["iters"]
    warmup = CUDA_WARMUP if torch.device(args.device).type == "cuda" else CPU_WARMUP
    dtype = getattr(torch, args.dtype)
    backends = available_backends(torch.device(args.device))
    print(f"# conv: {voxels} voxels of a {GRID_RESOLUTION}^3 shell, kernel {CONV_KERNEL}^3, "
          f"{args.dtype}, device {args.device}, backends {list(backends)}")
    base = shell_tensor(voxels, 1, dtype, args.device)
    build_ms = time_call(lambda: get_neighbor_map(SparseTensor(base.feats, base.coords), (CONV_KERNEL,) * 3, (1, 1, 1)),
                         args.device, iters, warmup)
    report("conv", "torch", "neighbour map build", build_ms, voxels)
    get_neighbor_map(base, (CONV_KERNEL,) * 3, (1, 1, 1)).pairs()  # shared by every conv below
    for c in channels:
        x = base.replace(torch.randn(voxels, c, dtype=dtype, device=args.device))
        for backend in backends:
            conv = SparseConv3d(c, c, CONV_KERNEL, backend=backend).to(args.device, dtype)
            with torch.no_grad():
                ms = time_call(lambda: conv(x), args.device, iters, warmup)
            report("conv", backend, f"fwd C={c}", ms, voxels)
            if args.backward:
                xg = x.replace(x.feats.clone().requires_grad_())
                ms = time_call(lambda: conv(xg).feats.float().sum().backward(), args.device, iters, warmup)
                report("conv", backend, f"fwd+bwd C={c}", ms, voxels)


sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_attention import bench_attention  # noqa: E402

SECTIONS: Dict[str, Callable[[argparse.Namespace], None]] = {
    "conv": bench_conv,
    "attention": bench_attention,
}


# ---------------------------------------------------------------------------------- driver
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="*", help=f"sections to run (default: all of {list(SECTIONS)})")
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds on a CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--voxels", type=int, default=None, help="voxels per tensor (overrides the preset)")
    parser.add_argument("--channels", type=int, nargs="+", default=None, help="conv widths (overrides the preset)")
    parser.add_argument("--iters", type=int, default=None, help="timed iterations (median is reported)")
    parser.add_argument("--backward", action="store_true", help="also time forward+backward")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    names = args.sections or list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for name in names:
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
