#!/usr/bin/env python
"""What each speed option does to the result: renders of every option against the faithful default.

A trained model (default: the shipped small model ``checkpoints/ss4d-small``) generates the same clip
(default: the demo clip ``assets/dancing_robot_fg.mp4``, 8 frames, stride 4, as ``make demo``) at the
same seed with the default settings and with each speed option: the ``fast`` preset
(:mod:`ss4d.presets`; also applied to one stage at a time), ``--cfg-batched``, ``--kv-cache``, ``--low-vram``, time chunks (half the
clip, overlap 2). Every result is rendered from the official demo grid's four yaws at a pitch of 15°
for every frame (128², :mod:`ss4d.render_compare`), and compared with the default's renders:

* **PSNR** (dB) over all renders of the option (one MSE over every pixel, view and frame; ``inf``
  when the renders are identical);
* **silhouette IoU** of the accumulated opacity (alpha > 0.5), mean over views and frames;
* **voxel IoU** of the occupied structure voxels, mean over frames. A different voxel set also
  shifts the structured-latent noise (drawn voxel by voxel in order, as the official pipeline does),
  so any change of the structure stage changes every later voxel's noise: the rows "fast, structure
  stage only" and "fast, SLat stage only" (on the default's voxels and noise) separate the two;
* **model calls**: forward calls of the two flow models (a batched CFG call is one), and **passes**:
  conditional + unconditional evaluations (a batched call is two): what the compute scales with;
* **CPU seconds**: the generation (process CPU time, all threads) and its wall time.

``--sweep-heun 4 6 8`` / ``--sweep-euler 12`` add rows with N Heun (batched CFG, K/V cache) or Euler
steps per stage: how the fast preset's step count was chosen. ``--reference LABEL`` adds PSNR / IoU
against another row, e.g. a many-step Heun run (close to the exact solution of the sampling ODE,
which the default's 25 Euler steps only approximate). One table is printed; ``--json`` writes
every number. Speed figures here are CPU figures of a small model: the GPU table is
``scripts/gpu_bench.sh``.

Usage::

    OMP_NUM_THREADS=1 python scripts/bench_quality.py --json quality.json [--sweep-heun 4 6 8]
"""
import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

from ss4d.perf import PassCounter, format_table  # noqa: E402
from ss4d.presets import resolve_preset  # noqa: E402
from ss4d.render import GRID_PITCH_DEG, GRID_YAWS_DEG  # noqa: E402
from ss4d.render_compare import COMPARE_RESOLUTION, compare_renders, render_views  # noqa: E402

DEFAULT_MODEL = os.path.join(REPO, "checkpoints", "ss4d-small")
CLIP = os.path.join(REPO, "assets", "dancing_robot_fg.mp4")
#: The demo's selection (scripts/demo.py): 8 frames, every 4th.
FRAMES, STRIDE = 8, 4
SEED = 42
#: Time-chunk row: chunks of half the clip, this overlap (frames).
CHUNK_OVERLAP = 2
TABLE = (("option", "option", "s"), ("calls", "model calls", "d"), ("passes", "passes", "d"),
         ("cpu_s", "CPU s", ".1f"), ("wall_s", "wall s", ".1f"), ("psnr", "PSNR dB", ".2f"),
         ("iou", "silhouette IoU", ".4f"), ("voxel_iou", "voxel IoU", ".4f"))
REFERENCE_COLUMNS = (("psnr_ref", "PSNR vs ref", ".2f"), ("iou_ref", "IoU vs ref", ".4f"))


def options(num_frames, sweep_heun=(), sweep_euler=()):
    """label -> (run kwargs, low_vram)."""
    def preset(name, **over):
        s = resolve_preset(name, **over)
        return {"ss_steps": s.steps_ss, "slat_steps": s.steps_slat,
                "sparse_structure_sampler_params": s.sampler_params, "slat_sampler_params": s.sampler_params}

    fast, default = preset("fast"), preset("default")
    rows = {"default": (default, False),
            "fast preset": (fast, False),
            # one stage fast, the other default: the structure stage alone (voxel IoU), and the SLat
            # stage alone on the default's voxels and noise (same voxels -> same noise draw)
            "fast, structure stage only": ({**default, "ss_steps": fast["ss_steps"],
                                            "sparse_structure_sampler_params": fast["sparse_structure_sampler_params"]},
                                           False),
            "fast, SLat stage only": ({**default, "slat_steps": fast["slat_steps"],
                                       "slat_sampler_params": fast["slat_sampler_params"]}, False),
            "cfg-batched": (preset("default", cfg_batched=True), False),
            "kv-cache": (preset("default", kv_cache=True), False),
            "low-vram": (preset("default"), True),
            f"time-chunk {num_frames // 2}/{CHUNK_OVERLAP}": (
                {**preset("default"), "time_chunk": num_frames // 2, "time_overlap": CHUNK_OVERLAP}, False)}
    for n in sweep_heun:
        rows[f"heun {n}+{n}, batched, kv"] = (preset("fast", steps_ss=n, steps_slat=n), False)
    for n in sweep_euler:
        rows[f"euler {n}+{n}, batched, kv"] = (preset("fast", steps_ss=n, steps_slat=n, solver="euler"), False)
    return rows


def load_images(clip, frames, stride):
    from ss4d.io import FrameSelection, read_frames
    from ss4d.matting import matte_frames
    from ss4d.preprocess import preprocess_frames

    c = read_frames(clip, FrameSelection(num_frames=frames, stride=stride))
    return preprocess_frames(matte_frames(c.frames)[0])[0]


def voxel_iou(coords, ref_coords, resolution):
    """Mean over frames of the IoU of two occupied-voxel sets (per frame ``[N, 3]`` (x, y, z))."""
    ious = []
    for a, b in zip(coords, ref_coords):
        ka = set((a[:, 0] * resolution ** 2 + a[:, 1] * resolution + a[:, 2]).tolist())
        kb = set((b[:, 0] * resolution ** 2 + b[:, 1] * resolution + b[:, 2]).tolist())
        ious.append(len(ka & kb) / max(len(ka | kb), 1))
    return sum(ious) / len(ious)


def bench(model, clip, frames, stride, seed, rows, reference=None):
    from ss4d import Pipeline

    images = load_images(clip, frames, stride)
    pipe = Pipeline.from_pretrained(model)
    flows = [pipe.models["sparse_structure_flow_model"], pipe.models["slat_flow_model"]]
    out, ref, renders = [], None, {}
    for label, (kw, low_vram) in rows.items():
        pipe.enable_low_vram("cpu") if low_vram else (pipe.disable_low_vram() if pipe.low_vram else None)
        counters = [PassCounter(f, len(images)) for f in flows]
        for c in counters:
            c.__enter__()
        try:
            c0, t0 = time.process_time(), time.perf_counter()
            res = pipe.run(images, seed=seed, preprocess_image=False, progress=False, **kw)
            cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        finally:
            for c in counters:
                c.__exit__(None, None, None)
        rgb, alpha = render_views(res.gaussians)
        renders[label] = (rgb, alpha)
        if ref is None:
            ref, ref_coords = (rgb, alpha), res.coords
        psnr, iou = compare_renders(rgb, alpha, *ref)
        row = {"option": label, "calls": sum(c.calls for c in counters),
               "passes": int(round(sum(c.passes for c in counters))), "cpu_s": cpu, "wall_s": wall,
               "psnr": psnr, "iou": iou, "voxels": sum(res.voxels_per_frame),
               "voxel_iou": voxel_iou(res.coords, ref_coords, res.resolution),
               "calls_per_stage": {"sparse_structure": counters[0].calls, "slat": counters[1].calls},
               "passes_per_stage": {"sparse_structure": counters[0].passes, "slat": counters[1].passes},
               "sampler": {k: {p: (list(v) if isinstance(v, tuple) else v) for p, v in d.items()}
                           for k, d in res.params.items()}}
        print(f"  {label}: {row['calls']} calls, {row['passes']} passes, {cpu:.1f} CPU s, PSNR {psnr:.2f} dB, "
              f"IoU {iou:.4f}", flush=True)
        out.append(row)
    if reference is not None:
        for row in out:
            row["psnr_ref"], row["iou_ref"] = compare_renders(*renders[row["option"]], *renders[reference])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL, help="trained SS4D folder (default checkpoints/ss4d-small)")
    ap.add_argument("--clip", nargs="+", default=[CLIP], help="input clip(s) (default the demo clip)")
    ap.add_argument("--frames", type=int, default=FRAMES, help=f"frames per clip (even; default {FRAMES})")
    ap.add_argument("--stride", type=int, default=STRIDE, help=f"use every K-th frame (default {STRIDE})")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--sweep-heun", type=int, nargs="*", default=[], metavar="N",
                    help="also N Heun steps per stage (batched CFG, K/V cache)")
    ap.add_argument("--sweep-euler", type=int, nargs="*", default=[], metavar="N",
                    help="also N Euler steps per stage (batched CFG, K/V cache)")
    ap.add_argument("--reference", metavar="LABEL",
                    help="also compare every row with this one (e.g. a many-step Heun row: the converged "
                         "solution the default's 25 Euler steps approximate)")
    ap.add_argument("--only", nargs="*", help="run only these option labels (the default always runs first)")
    ap.add_argument("--json", help="write every number to this JSON file")
    args = ap.parse_args(argv)
    if args.frames < 2 or args.frames % 2:
        ap.error("--frames must be even and >= 2")
    rows = options(args.frames, args.sweep_heun, args.sweep_euler)
    if args.only:
        rows = {k: v for k, v in rows.items() if k == "default" or k in args.only}
    if args.reference is not None and args.reference not in rows:
        ap.error(f"--reference {args.reference!r} is not one of the rows: {', '.join(rows)}")
    results = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "torch": torch.__version__,
               "device": "cpu", "threads": torch.get_num_threads(), "model": os.path.relpath(args.model, REPO),
               "frames": args.frames, "stride": args.stride, "seed": args.seed,
               "views": {"yaws_deg": GRID_YAWS_DEG, "pitch_deg": GRID_PITCH_DEG, "resolution": COMPARE_RESOLUTION},
               "clips": {}}
    for clip in args.clip:
        print(f"# {os.path.relpath(clip, REPO)}: {args.frames} frames (stride {args.stride}), seed {args.seed}, "
              f"{os.path.relpath(args.model, REPO)}, CPU, {torch.get_num_threads()} thread(s)", flush=True)
        results["clips"][os.path.relpath(clip, REPO)] = bench(args.model, clip, args.frames, args.stride, args.seed,
                                                              rows, args.reference)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=float)
    for clip, table in results["clips"].items():
        print(f"\n# {clip}; PSNR / IoU of {len(GRID_YAWS_DEG)} views x {args.frames} frames at "
              f"{COMPARE_RESOLUTION}² against the default")
        print(format_table(table, TABLE + (REFERENCE_COLUMNS if args.reference else ())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
