"""Attention throughput at TRELLIS-like sizes, for every backend usable on this machine.

Two workloads:

* ``varlen-full``: full self-attention over ``FULL_ITEMS`` sequences of ``FULL_TOKENS`` tokens each,
  packed (``varlen_attention``) -- the SLat flow transformer's pattern (16 heads × 64).
* ``swin``: 3D swin self-attention (windows ``SWIN_WINDOW``³, shift ``SWIN_WINDOW // 2``) over the voxels
  of a sphere shell in a ``SWIN_RES``³ grid -- the SLat VAE's pattern. The window partition is built (and
  cached) once before timing, as in a model where every block reuses it.

Used by ``scripts/bench_backends.py`` (``from bench_attention import bench_attention``) or standalone:
``python scripts/bench_attention.py [--quick] [--device cpu|cuda]``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict, List

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from trellis_ext.attention import available_backends, sparse_windowed_self_attention, varlen_attention  # noqa: E402
from trellis_ext.attention.windowed import sparse_window_partition  # noqa: E402
from trellis_ext.sparse import SparseTensor  # noqa: E402

HEADS = 16
HEAD_DIM = 64
FULL_ITEMS = 2
FULL_TOKENS = 8192
QUICK_FULL_TOKENS = 2048
SWIN_RES = 64
QUICK_SWIN_RES = 32
SWIN_WINDOW = 8
#: Shell: voxels whose distance to the grid centre lies in [SHELL_RADIUS·res, SHELL_RADIUS·res + SHELL_WIDTH).
SHELL_RADIUS = 0.4
SHELL_WIDTH = 1.5
#: The naive backend materialises H·L² scores; skip it above this sequence length.
NAIVE_MAX_TOKENS = 4096
REPEATS = 3
QUICK_REPEATS = 1
WARMUP = 1
#: Multiply-adds of QKᵀ and PV, 2 flops each.
FLOPS_PER_SCORE = 4


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn, device: str, repeats: int) -> float:
    for _ in range(WARMUP):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def _shell_coords(res: int, device: str) -> torch.Tensor:
    ax = torch.arange(res)
    grid = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    r = (grid.float() - (res - 1) / 2).norm(dim=1)
    xyz = grid[(r >= SHELL_RADIUS * res) & (r < SHELL_RADIUS * res + SHELL_WIDTH)]
    return torch.cat([torch.zeros(len(xyz), 1, dtype=torch.long), xyz], 1).int().to(device)


def bench_attention(args) -> List[Dict]:
    """Print and return attention throughput per backend.

    Reads from ``args`` (an argparse namespace; every field optional):
        quick (bool): small sizes, one repeat (< 1 min on a 2-core CPU).
        device (str): ``cpu`` / ``cuda`` (default: cuda when available).

    Returns:
        One dict per (workload, backend): workload, backend, device, dtype, tokens, seconds, tokens_per_s,
        tflops (attention matmuls only).
    """
    quick = bool(getattr(args, "quick", False))
    device = getattr(args, "device", None) or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    repeats = QUICK_REPEATS if quick else REPEATS
    tokens = QUICK_FULL_TOKENS if quick else FULL_TOKENS
    res = QUICK_SWIN_RES if quick else SWIN_RES
    gen = torch.Generator().manual_seed(0)
    results: List[Dict] = []
    print(f"[attention] device={device} dtype={str(dtype)[6:]} heads={HEADS} head_dim={HEAD_DIM} quick={quick}")

    def report(workload: str, backend: str, n_tokens: int, seconds: float, scores: int) -> None:
        row = dict(workload=workload, backend=backend, device=device, dtype=str(dtype)[6:], tokens=n_tokens,
                   seconds=seconds, tokens_per_s=n_tokens / seconds,
                   tflops=FLOPS_PER_SCORE * scores * HEAD_DIM * HEADS / seconds / 1e12)
        results.append(row)
        print(f"  {workload:<12} {backend:<10} tokens={n_tokens:>7} {seconds * 1e3:9.2f} ms "
              f"{row['tokens_per_s'] / 1e6:8.3f} Mtok/s {row['tflops']:7.3f} TFLOP/s")

    # ---- full attention over packed sequences
    lens = [tokens] * FULL_ITEMS
    q, k, v = (torch.randn(sum(lens), HEADS, HEAD_DIM, generator=gen).to(device, dtype) for _ in range(3))
    for backend in available_backends(q):
        if backend == "naive" and tokens > NAIVE_MAX_TOKENS:
            print(f"  {'varlen-full':<12} {backend:<10} skipped (L={tokens} > {NAIVE_MAX_TOKENS})")
            continue
        secs = _time(lambda: varlen_attention(q, k, v, lens, lens, backend=backend), device, repeats)
        report("varlen-full", backend, sum(lens), secs, sum(n * n for n in lens))

    # ---- swin windows over a sphere shell
    coords = _shell_coords(res, device)
    qkv = SparseTensor(torch.randn(len(coords), 3, HEADS, HEAD_DIM, generator=gen).to(device, dtype), coords)
    shift = SWIN_WINDOW // 2
    start = time.perf_counter()
    _, _, seqlens = sparse_window_partition(qkv, SWIN_WINDOW, shift)
    print(f"  swin partition: {len(coords)} voxels in {len(seqlens)} windows "
          f"(max {max(seqlens)}), built in {(time.perf_counter() - start) * 1e3:.1f} ms")
    for backend in available_backends(qkv.feats):
        secs = _time(lambda: sparse_windowed_self_attention(qkv, SWIN_WINDOW, shift, backend=backend), device, repeats)
        report("swin", backend, len(coords), secs, sum(n * n for n in seqlens))
    return results


def add_attention_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments ``bench_attention`` reads."""
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    return parser


if __name__ == "__main__":
    bench_attention(add_attention_args(argparse.ArgumentParser(description=__doc__)).parse_args())
