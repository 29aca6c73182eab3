#!/usr/bin/env python
"""Training throughput and peak memory per stage at T = 8 / 16 / 32 frames (random weights, synthetic batches).

One measured step = the stage's objective (the same loss functions the trainers use) + backward + AdamW step,
under autocast (``--dtype``), with gradient checkpointing on and/or off. Figures are printed, never asserted.

* ``--size tiny`` (default without CUDA): the shipped ``configs/train/tiny_*.json`` models on CPU; peak memory is
  the process's peak RSS (``ru_maxrss``; it only grows, so stages run from small to large).
* ``--size full`` (default on CUDA): the full-size ``configs/train/*_4d.json`` / ``ss_vae.json`` models, batch as
  in the paper (2 per GPU for the flows, 1 for the VAEs), peak ``torch.cuda.max_memory_allocated``.

    python scripts/bench_training.py [--size tiny|full] [--frames 8 16 32] [--stages ss_flow slat_flow slat_vae ss_vae]
                                     [--dtype bf16|fp16|fp32] [--checkpointing on off] [--steps 3] [--json OUT]
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

import ss4d.models  # noqa: E402,F401  (registers the 4D classes)
from ss4d.frames import fold_sparse_frames  # noqa: E402
from ss4d.training.stage import set_gradient_checkpointing  # noqa: E402
from trellis_ext.models.checkpoint import build_model  # noqa: E402
from trellis_ext.renderers import render_gaussians  # noqa: E402
from trellis_ext.renderers.camera import orbit_camera  # noqa: E402
from trellis_ext.sparse import SparseTensor  # noqa: E402
from trellis_ext.training.flow import dense_flow_loss, keyed_generator, per_clip_t, sparse_flow_loss  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
CONFIGS = {"tiny": {s: f"tiny_{s}" for s in ("ss_flow", "slat_flow", "slat_vae", "ss_vae")},
           "full": {"ss_flow": "ss_flow_4d", "slat_flow": "slat_flow_4d", "slat_vae": "slat_vae_4d", "ss_vae": "ss_vae"}}
COND_TOKENS = {"tiny": 1374, "full": 1374}            # DINOv2-reg tokens at 518² (the tiny encoder has as many)
VOXELS_PER_FRAME = {"tiny": 900, "full": 20000}      # a 32³ toy object / a typical TRELLIS object at 64³
RENDER = {"tiny": 32, "full": 512}
BATCH = {"ss_flow": 2, "slat_flow": 2, "slat_vae": 1, "ss_vae": 2}   # per GPU (paper: 2 generators, 1 VAE)


def load_cfg(name: str) -> dict:
    with open(os.path.join(REPO, "configs", "train", name + ".json"), encoding="utf-8") as f:
        return json.load(f)


def random_coords(num_frames: int, batch: int, per_frame: int, res: int, gen: torch.Generator):
    """A shell-like random voxel set per frame: [N, 4] (b·T+t, x, y, z) and per-frame lists."""
    clips = []
    for _ in range(batch):
        frames = []
        for _ in range(num_frames):
            idx = torch.randperm(res ** 3, generator=gen)[:per_frame]
            frames.append(torch.stack([idx // (res * res), (idx // res) % res, idx % res], 1))
        clips.append(frames)
    return fold_sparse_frames(clips)[0]


def make_step(stage: str, size: str, frames: int, device: torch.device):
    """(models, loss_fn) for one stage with random weights and a synthetic batch."""
    cfg = load_cfg(CONFIGS[size][stage])
    cond_channels = cfg["models"].get("denoiser", {}).get("args", {}).get("cond_channels")
    models = {k: build_model({"name": v["name"], "args": {**v["args"], "use_fp16": False}}).to(device)
              for k, v in cfg["models"].items()}
    gen = keyed_generator(0)
    b = BATCH[stage]
    if stage == "ss_flow":
        m = models["denoiser"]
        x0 = torch.randn(b * frames, m.in_channels, m.resolution, m.resolution, m.resolution, generator=gen).to(device)
        cond = torch.randn(b * frames, COND_TOKENS[size], cond_channels, generator=gen).to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        t = per_clip_t(b, frames, gen).to(device)
        return models, lambda: dense_flow_loss(m, x0, noise, t, cond, num_frames=frames)
    if stage == "slat_flow":
        m = models["denoiser"]
        coords = random_coords(frames, b, VOXELS_PER_FRAME[size], m.resolution, gen).to(device)
        x0 = SparseTensor(torch.randn(coords.shape[0], m.in_channels, generator=gen).to(device), coords)
        cond = torch.randn(b * frames, COND_TOKENS[size], cond_channels, generator=gen).to(device)
        noise = torch.randn(x0.feats.shape, generator=gen).to(device)
        t = per_clip_t(b, frames, gen).to(device)
        return models, lambda: sparse_flow_loss(m, x0, noise, t, cond, num_frames=frames)
    if stage == "slat_vae":
        enc, dec = models["encoder"], models["decoder"]
        coords = random_coords(frames, b, VOXELS_PER_FRAME[size], enc.resolution, gen).to(device)
        x = SparseTensor(torch.randn(coords.shape[0], enc.in_channels, generator=gen).to(device), coords)
        cam = orbit_camera(0.5, 0.3, 2.0, 40.0, RENDER[size]).to(device)
        gt = torch.rand(3, RENDER[size], RENDER[size], generator=gen).to(device)

        def vae_loss():
            z, mean, logvar = enc(x, num_frames=frames, sample_posterior=True, return_raw=True)
            loss = 1e-6 * (mean.float() ** 2).mean()
            for g in dec(z, num_frames=frames):
                loss = loss + (render_gaussians(g, cam).rgb - gt).abs().mean()
            return loss
        return models, vae_loss
    enc, dec = models["encoder"], models["decoder"]
    res = 64 if size == "full" else 32
    occ = (torch.rand(b * frames, 1, res, res, res, generator=gen) < 0.02).float().to(device)

    def ss_vae_loss():
        z = enc(occ, sample_posterior=True)
        return torch.nn.functional.binary_cross_entropy_with_logits(dec(z).float(), occ)
    return models, ss_vae_loss


def bench(stage: str, size: str, frames: int, device: torch.device, dtype: torch.dtype, checkpointing: bool,
          steps: int) -> dict:
    torch.manual_seed(0)
    models, loss_fn = make_step(stage, size, frames, device)
    for m in models.values():
        set_gradient_checkpointing(m, checkpointing)
        m.train()
    params = [p for m in models.values() for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-4)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
    times = []
    for i in range(steps + 1):                        # the first step warms up and is not timed
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    sec = sum(times) / len(times)
    return {"stage": stage, "size": size, "frames": frames, "batch": BATCH[stage], "checkpointing": checkpointing,
            "dtype": str(dtype).replace("torch.", ""), "s_per_step": sec, "steps_per_s": 1.0 / sec,
            "peak_mem_gb": peak / 2 ** 30, "params_m": sum(p.numel() for p in params) / 1e6,
            "loss_finite": bool(torch.isfinite(loss).item())}


def main(argv=None) -> int:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=("tiny", "full"), default="full" if cuda else "tiny")
    p.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--stages", nargs="+", default=["ss_vae", "ss_flow", "slat_vae", "slat_flow"],
                   choices=list(BATCH))
    p.add_argument("--dtype", choices=list(DTYPES), default="bf16" if cuda else "fp32")
    p.add_argument("--checkpointing", nargs="+", choices=("on", "off"), default=["on", "off"] if cuda else ["off"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the rows to this file")
    a = p.parse_args(argv)
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        print("no CUDA device: tiny configs on CPU (peak = process RSS); the full-size GPU figures need a GPU")
    rows = []
    print(f"{'stage':10s} {'T':>3s} {'B':>2s} {'ckpt':>4s} {'dtype':>8s} {'s/step':>8s} {'steps/s':>8s} {'peak GB':>8s} "
          f"{'params M':>9s}")
    for stage in a.stages:
        for frames in a.frames:
            for ck in a.checkpointing:
                try:
                    r = bench(stage, a.size, frames, device, DTYPES[a.dtype], ck == "on", a.steps)
                except torch.cuda.OutOfMemoryError:
                    print(f"{stage:10s} {frames:3d} OOM")
                    torch.cuda.empty_cache()
                    continue
                rows.append(r)
                print(f"{stage:10s} {frames:3d} {r['batch']:2d} {ck:>4s} {r['dtype']:>8s} {r['s_per_step']:8.3f} "
                      f"{r['steps_per_s']:8.2f} {r['peak_mem_gb']:8.2f} {r['params_m']:9.2f}", flush=True)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
