#!/usr/bin/env python
"""Per-stage time and peak memory of ``ss4d.Pipeline``.

* **CPU, tiny pipeline** (always): the tiny random-weight folder of ``ss4d.tiny`` (written to a temp
  folder), frames of ``assets/dancing_robot_fg.mp4``, T = 2/4/8 by default. Peak memory is the peak
  resident set size of the process during each stage (Linux: ``VmHWM`` reset before every stage via
  ``/proc/self/clear_refs``; elsewhere the process-wide ``ru_maxrss``).
* **CPU thread counts** (always): the same tiny T=2 generation with torch's own default (every
  logical core), ss4d's default (:func:`ss4d.threads.default_threads`: idle physical cores) and 1
  thread, median of :data:`THREAD_REPEATS` runs each, with the load average at the start. On a busy
  2-core machine torch's default was ~4.5x slower than 1 thread (issue 8); this is where that is
  measured, not in the tests.
* **GPU, full size** (only with CUDA): the released architectures (``configs/ss4d/*.json``) with random
  weights, a random full-size DINOv2 ViT-L/14-reg encoder, bf16 torsos by default, T = 8/16/32, the
  TRELLIS sampler settings (25 + 25 steps, CFG 7.5 / 3.0 on [0.5, 1], rescale_t 3). Peak memory is
  ``torch.cuda.max_memory_allocated`` per stage. The SS decoder's output bias is shifted so that about
  :data:`FULL_OCCUPANCY` of the 64³ grid is occupied (random weights would otherwise fill half of it).
  Without CUDA this part prints that it is skipped.

Usage: ``python scripts/bench_pipeline.py [--frames 2 4 8] [--threads N] [--gpu-frames 8 16 32]
[--gpu-dtype bf16] [--steps N] [--no-thread-compare]``.
"""
import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

CLIP = os.path.join(REPO, "assets", "dancing_robot_fg.mp4")
FULL_OCCUPANCY = 0.06   # ~16k of 64³ voxels per frame, a typical TRELLIS object
FULL_SAMPLERS = {"ss": {"steps": 25, "cfg_strength": 7.5, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0},
                 "slat": {"steps": 25, "cfg_strength": 3.0, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0}}
STAGES = ("condition", "sparse_structure", "slat", "decode", "render")
THREAD_REPEATS = 3       # runs per thread count in the comparison (median reported)
THREAD_COMPARE_FRAMES = 2


class Meter:
    """Wall time and peak memory of one stage."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                pass
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self.peak = _peak_rss()
        self.seconds = time.perf_counter() - self.t0
        return False


def _peak_rss() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_stages(pipe, images, seed=42, ss_params=None, slat_params=None, render_resolution=256):
    """The stages of ``Pipeline.run`` one by one, each measured."""
    from ss4d.render import RenderSettings, render_view
    from trellis_ext.sparse import SparseTensor

    device = pipe.device
    rows = {}
    T = len(images)
    with Meter(device) as m:
        cond = pipe.encode_frames(images)
        neg = torch.zeros_like(cond)
    rows["condition"] = m
    torch.manual_seed(seed)
    flow = pipe.models["sparse_structure_flow_model"]
    r = flow.resolution
    with Meter(device) as m:
        coords, _, _ = pipe.sample_sparse_structure(cond, neg, torch.randn(T, flow.in_channels, r, r, r).to(device),
                                                    **{**pipe.ss_params, **(ss_params or {})})
    rows["sparse_structure"] = m
    with Meter(device) as m:
        noise = SparseTensor(torch.randn(coords.shape[0], pipe.models["slat_flow_model"].in_channels).to(device), coords)
        slat, _ = pipe.sample_slat(cond, neg, noise, T, **{**pipe.slat_params, **(slat_params or {})})
    rows["slat"] = m
    with Meter(device) as m:
        gaussians = pipe.decode_slat(slat, T)
    rows["decode"] = m
    with Meter(device) as m:
        render_view(gaussians[0], 30, 15, RenderSettings(resolution=render_resolution))
    rows["render"] = m
    return rows, int(coords.shape[0]), sum(len(g) for g in gaussians)


def print_rows(label, rows, voxels, gaussians, unit_note):
    total = sum(m.seconds for k, m in rows.items() if k != "render")
    print(f"\n{label}: {voxels} voxels, {gaussians} Gaussians; generation {total:.2f} s ({unit_note})")
    print(f"  {'stage':<18}{'time (s)':>10}{'peak (GiB)':>12}")
    for k in STAGES:
        m = rows[k]
        print(f"  {k:<18}{m.seconds:>10.2f}{m.peak / 2**30:>12.3f}")
    return {k: {"seconds": round(rows[k].seconds, 3), "peak_bytes": int(rows[k].peak)} for k in STAGES}


def bench_cpu_tiny(frame_counts, threads):
    from ss4d import Pipeline
    from ss4d.io import FrameSelection, read_frames
    from ss4d.matting import matte_frames
    from ss4d.preprocess import preprocess_frames
    from ss4d.tiny import write_tiny_video_to_4d

    if threads:
        torch.set_num_threads(threads)
    print(f"# CPU, tiny random-weight pipeline (ss4d.tiny), {torch.get_num_threads()} torch thread(s), "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_tiny_video_to_4d(os.path.join(tmp, "tiny"))
        pipe = Pipeline.from_pretrained(folder)
        for T in frame_counts:
            clip = read_frames(CLIP, FrameSelection(num_frames=T, stride=max(1, 32 // T)))
            images, _ = preprocess_frames(matte_frames(clip.frames)[0])
            run_stages(pipe, images[:2])  # warm-up
            rows, voxels, gaussians = run_stages(pipe, images)
            out[f"T{T}"] = print_rows(f"T={T}", rows, voxels, gaussians,
                                      "4 + 4 steps; peak = process RSS during the stage; render = one 256² frame")
    return out


def bench_threads():
    """Generation time of the tiny pipeline with torch's default, ss4d's default and 1 thread."""
    import statistics

    from ss4d import Pipeline
    from ss4d.io import FrameSelection, read_frames
    from ss4d.matting import matte_frames
    from ss4d.preprocess import preprocess_frames
    from ss4d.threads import default_threads
    from ss4d.tiny import write_tiny_video_to_4d

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    counts = {"torch default (all logical cores)": os.cpu_count() or 1, "ss4d default (idle physical cores)":
              default_threads(), "1 thread": 1}
    print(f"\n# CPU thread counts, tiny pipeline, T={THREAD_COMPARE_FRAMES}, 1-min load {load:.2f} on "
          f"{os.cpu_count()} cores; median of {THREAD_REPEATS} runs")
    before = torch.get_num_threads()
    out = {"load_avg_1min": load}
    with tempfile.TemporaryDirectory() as tmp:
        pipe = Pipeline.from_pretrained(write_tiny_video_to_4d(os.path.join(tmp, "tiny")))
        clip = read_frames(CLIP, FrameSelection(num_frames=THREAD_COMPARE_FRAMES, stride=16))
        images, _ = preprocess_frames(matte_frames(clip.frames)[0])
        for label, n in counts.items():
            torch.set_num_threads(n)
            run_stages(pipe, images)  # warm-up
            times = [sum(m.seconds for k, m in run_stages(pipe, images)[0].items() if k != "render")
                     for _ in range(THREAD_REPEATS)]
            out[label] = {"threads": n, "seconds": round(statistics.median(times), 3)}
            print(f"  {label:<36}{n:>4} thread(s){statistics.median(times):>9.2f} s")
    torch.set_num_threads(before)
    return out


def build_full_pipeline(device, dtype, seed=0):
    from ss4d.conditioning.dinov2 import load_dinov2
    from ss4d.pipeline import Pipeline
    from ss4d.tiny import SLAT_NORMALIZATION
    from trellis_ext.models.checkpoint import build_model
    from trellis_ext.pipelines.samplers import FlowEulerGuidanceIntervalSampler
    from trellis_ext.pipelines.tiny import calibrate_occupancy, randomize_weights

    names = {"sparse_structure_flow_model": "ss_flow_video_4d", "sparse_structure_decoder": "ss_dec_conv3d_16l8_fp16",
             "slat_flow_model": "slat_flow_video_4d", "slat_decoder_gs": "slat_dec_gs_4d"}
    models = {}
    for i, (key, name) in enumerate(names.items()):
        with open(os.path.join(REPO, "configs", "ss4d", f"{name}.json")) as f:
            cfg = json.load(f)
        cfg["args"]["use_fp16"] = False
        cfg["args"].pop("use_checkpoint", None)
        models[key] = randomize_weights(build_model(cfg, source=name), seed + i).eval().to(device)
    # occupancy calibration (fp32, before the torsos are cast): shift the decoder bias so FULL_OCCUPANCY
    # of 64³ is occupied for noise latents
    flow = models["sparse_structure_flow_model"]
    r = flow.resolution
    calibrate_occupancy(models["sparse_structure_decoder"], torch.randn(2, flow.in_channels, r, r, r, device=device),
                        FULL_OCCUPANCY)
    encoder = load_dinov2("random-vitl14-reg", device=device)
    sampler = FlowEulerGuidanceIntervalSampler(sigma_min=1e-5)
    pipe = Pipeline(models, sampler, FULL_SAMPLERS["ss"], sampler, FULL_SAMPLERS["slat"], SLAT_NORMALIZATION, encoder)
    return pipe.to(device, dtype)


def bench_gpu_full(frame_counts, dtype_name, steps):
    from ss4d.pipeline import DTYPES

    if not torch.cuda.is_available():
        print("\n# GPU, full size: SKIPPED (no CUDA device). Run this script on a CUDA machine to measure the "
              "released architectures with random weights at T=8/16/32.")
        return None
    device = torch.device("cuda")
    dtype = DTYPES[dtype_name]
    print(f"\n# GPU, full size ({torch.cuda.get_device_name()}), random weights, {dtype_name} torsos, "
          f"steps {steps or 25}+{steps or 25}")
    pipe = build_full_pipeline(device, dtype)
    over = {"steps": steps} if steps else {}
    from PIL import Image

    out = {}
    for T in frame_counts:
        images = [Image.effect_noise((518, 518), 64).convert("RGB") for _ in range(T)]
        try:
            rows, voxels, gaussians = run_stages(pipe, images, ss_params=over, slat_params=over, render_resolution=512)
        except torch.cuda.OutOfMemoryError:
            print(f"\nT={T}: out of GPU memory")
            torch.cuda.empty_cache()
            out[f"T{T}"] = "OOM"
            continue
        out[f"T{T}"] = print_rows(f"T={T}", rows, voxels, gaussians,
                                  "peak = torch.cuda.max_memory_allocated during the stage; render = one 512² frame")
        torch.cuda.empty_cache()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[2, 4, 8], help="CPU tiny-pipeline clip lengths")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--gpu-frames", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--gpu-dtype", default="bf16", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--steps", type=int, help="GPU: steps per stage (default 25)")
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    ap.add_argument("--no-thread-compare", action="store_true", help="skip the CPU thread-count comparison")
    args = ap.parse_args()
    if any(t < 2 or t % 2 for t in args.frames + args.gpu_frames):
        ap.error("frame counts must be even and >= 2")
    results = {"torch": torch.__version__, "cpu_tiny": bench_cpu_tiny(args.frames, args.threads),
               "cpu_threads": None if args.no_thread_compare else bench_threads(),
               "gpu_full": bench_gpu_full(args.gpu_frames, args.gpu_dtype, args.steps)}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
