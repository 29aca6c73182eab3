#!/usr/bin/env python
"""Per-stage time, peak memory and FLOPs of ``ss4d.Pipeline``; achieved rate against the matmul ceiling.

* **CPU, tiny pipeline** (always): the tiny random-weight folder of ``ss4d.tiny`` (written to a temp
  folder), frames of ``assets/dancing_robot_fg.mp4``, T = 2/4/8 by default. Peak memory is the peak
  resident set size of the process during each stage.
* **CPU thread counts** (unless ``--no-thread-compare``): the same tiny T=2 generation with torch's
  own default (every logical core), ss4d's default (:func:`ss4d.threads.default_threads`: idle
  physical cores) and 1 thread, median of :data:`THREAD_REPEATS` runs each, with the load average at
  the start. On a busy 2-core machine torch's default was ~4.5x slower than 1 thread (issue 8).
* **GPU, full size** (only with CUDA): the released architectures (``configs/ss4d/*.json``) with random
  weights and a random full-size DINOv2 ViT-L/14-reg encoder, T = 8/16/32, bf16 and fp16 torsos, the
  TRELLIS sampler settings (25 + 25 steps, CFG 7.5 / 3.0 on [0.5, 1], rescale_t 3) as the
  ``default`` preset and :data:`FAST_PRESET` (``ss4d.presets``' ``fast``) as ``fast``. Then the
  memory rows: T = 64/128 with one step per stage (the peak of a step does not grow with the step
  count), in default and ``--low-vram``-like settings where the pipeline offers them. The SS decoder's output bias is
  shifted so that about :data:`FULL_OCCUPANCY` of the 64³ grid is occupied.

Per row and stage: wall time (CUDA events around the stage after one warm-up generation of one
step per stage; on CPU ``perf_counter``), peak memory allocated and reserved, FLOPs (matmul /
conv / attention, ``FlopCounterMode`` on one model forward times the number of passes the sampler
made (a batched-CFG call is two), :mod:`ss4d.perf`), achieved TFLOP/s and the fraction of the
measured bf16 matmul ceiling. Two rows at the largest T measure the faster work: the structure flow
compiled (``Pipeline.enable_compile``: CUDA graphs; the compile + capture time recorded apart) and
FP8 trunk matmuls (``Pipeline.enable_fp8``, torchao, compute capability >= 8.9) with their render
PSNR and silhouette IoU against the bf16 default row (same input, same seed); these two rows count
no FLOPs (the same work as the default row). One table is printed at the end; ``--json`` writes
every number.

Usage (GPU, the README's performance table; about 5 minutes on an H100/H200)::

    python scripts/bench_pipeline.py --no-thread-compare --frames 2 --json bench.json

Options: ``--frames`` (CPU tiny T), ``--threads``, ``--gpu-frames 8 16 32``, ``--gpu-dtypes bf16 fp16``,
``--memory-frames 64 128``, ``--steps N`` (both stages, default 25), ``--no-fast``, ``--no-accel``
(no compile / FP8 rows), ``--json PATH``.
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ss4d.perf import PassCounter, StageMeter, count_flops, format_table, matmul_ceiling  # noqa: E402
from ss4d.presets import resolve_preset  # noqa: E402

CLIP = os.path.join(REPO, "assets", "dancing_robot_fg.mp4")
FULL_OCCUPANCY = 0.06   # ~16k of 64³ voxels per frame, a typical TRELLIS object
FULL_SAMPLERS = {"ss": {"steps": 25, "cfg_strength": 7.5, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0},
                 "slat": {"steps": 25, "cfg_strength": 3.0, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0}}
#: The ``fast`` preset of ``ss4d-generate --preset fast`` (:mod:`ss4d.presets`: Heun steps, batched CFG,
#: cached condition K/V), as sampler parameters of one stage (both stages have the same steps).
_FAST = resolve_preset("fast")
FAST_PRESET = {"steps": _FAST.steps_slat, **_FAST.sampler_params}
#: Time chunks of the long-clip memory row (SLat flow and 4D decoder; ``ss4d.time_chunks``).
TIME_CHUNKS = {"time_chunk": 32, "time_overlap": 8}
#: Steps per stage of the warm-up generation (excluded from the figures) and of the memory rows.
WARMUP_STEPS = 1
STAGES = ("condition", "sparse_structure", "slat", "decode", "render")
#: Resolution of the one render timed with ``--gpu-render`` (gsplat JIT-compiles for minutes on a
#: fresh machine, so the GPU run leaves the render out by default).
GPU_RENDER_RESOLUTION = 512
#: Side of the (noise) input frames of the GPU rows: SS4D's preprocessed size.
IMAGE_SIZE = 518
#: Default time budget (s) of the GPU rows: rows not started by then are skipped and listed.
GPU_BUDGET_S = 360
GENERATION_STAGES = STAGES[:-1]
THREAD_REPEATS = 3       # runs per thread count in the comparison (median reported)
THREAD_COMPARE_FRAMES = 2
TINY_STEPS = 4           # the tiny folder's steps per stage
GIB = 2 ** 30
TABLE = (("label", "run", "s"), ("T", "T", "d"), ("seconds", "gen s", ".2f"), ("ss_s", "ss s", ".2f"),
         ("slat_s", "slat s", ".2f"), ("decode_s", "dec s", ".2f"), ("peak_gib", "peak GiB", ".2f"),
         ("reserved_gib", "resv GiB", ".2f"), ("pflop", "PFLOP", ".3g"), ("tflops", "TFLOP/s", ".3g"),
         ("fraction", "of ceiling", ".3f"), ("psnr_vs_bf16", "PSNR vs bf16", ".1f"))


def run_stages(pipe, images, seed=42, ss_params=None, slat_params=None, render_resolution=256, count=False,
               keep=False):
    """The stages of ``Pipeline.run`` one by one, each measured with :class:`ss4d.perf.StageMeter`.

    Returns ``(meters, voxels, gaussians, flops, extra)``; ``flops`` per stage (None unless
    ``count``): the condition and decode stages counted whole, the flow stages as one counted model
    forward times the passes the sampler made (:class:`ss4d.perf.PassCounter`; plus the SS decoder,
    counted whole). ``extra``:
    with time chunks (``slat_params["time_chunk"]``), the flicker measure at chunk borders and inside
    chunks (:func:`ss4d.time_chunks.frame_jumps`); with ``keep``, the Gaussians themselves
    (``"gaussians_list"``, for render comparisons).
    """
    from ss4d.time_chunks import border_pairs, frame_jumps

    from ss4d.models.ss_vae_4d import decode_frames
    from ss4d.render import RenderSettings, render_view
    from trellis_ext.sparse import SparseTensor

    device = pipe.device
    meters, flops = {}, {}
    T = len(images)
    ss_p = {**pipe.ss_params, **(ss_params or {})}
    slat_p = {**pipe.slat_params, **(slat_params or {})}
    with StageMeter(device) as m:
        cond = pipe.encode_frames(images)
        neg = torch.zeros_like(cond)
    meters["condition"] = m
    torch.manual_seed(seed)
    flow = pipe.models["sparse_structure_flow_model"]
    r = flow.resolution
    ss_noise = torch.randn(T, flow.in_channels, r, r, r).to(device)
    with StageMeter(device) as m, PassCounter(flow, T) as ss_calls:
        coords, ss_out, _ = pipe.sample_sparse_structure(cond, neg, ss_noise, **ss_p)
    meters["sparse_structure"] = m
    slat_flow = pipe.models["slat_flow_model"]
    noise = SparseTensor(torch.randn(coords.shape[0], slat_flow.in_channels).to(device), coords.to(device))
    with StageMeter(device) as m, PassCounter(slat_flow, T) as slat_calls:
        slat, _ = pipe.sample_slat(cond, neg, noise, T, **slat_p)
    meters["slat"] = m
    with StageMeter(device) as m:
        gaussians = pipe.decode_slat(slat, T, time_chunk=slat_p.get("time_chunk"),
                                     time_overlap=slat_p.get("time_overlap", 0))
    meters["decode"] = m
    extra = {"gaussians_list": gaussians} if keep else {}
    if slat_p.get("time_chunk") and T > 2:
        jumps = frame_jumps(gaussians)
        border = border_pairs(T, slat_p["time_chunk"], slat_p.get("time_overlap", 0))
        inside = [p for p in range(T - 1) if p not in border]
        extra["flicker_border"] = float(jumps[border].mean()) if border else None
        extra["flicker_inside"] = float(jumps[inside].mean()) if inside else None
    if render_resolution:
        with StageMeter(device) as m:
            render_view(gaussians[0], 30, 15, RenderSettings(resolution=render_resolution))
        meters["render"] = m
    if count:
        t = torch.full((T,), 500.0, device=device)
        with torch.no_grad():
            flops["condition"] = count_flops(pipe.encode_frames, images)[1]
            fwd = count_flops(flow, ss_noise, t, cond, num_frames=T)[1]
            dec = count_flops(decode_frames, pipe.models["sparse_structure_decoder"], ss_out.samples[None])[1]
            flops["sparse_structure"] = fwd * ss_calls.passes + dec
            flops["slat"] = count_flops(slat_flow, noise, t, cond, num_frames=T)[1] * slat_calls.passes
            flops["decode"] = count_flops(pipe.decode_slat, slat, T)[1]
        flops["model_calls"] = {"sparse_structure": ss_calls.calls, "slat": slat_calls.calls}
        flops["model_passes"] = {"sparse_structure": ss_calls.passes, "slat": slat_calls.passes}
    return meters, int(coords.shape[0]), sum(len(g) for g in gaussians), flops or None, extra


def summarize(label, T, meters, voxels, gaussians, flops, extra=None, ceiling_tflops=None):
    """One table row (generation = every stage but the render) + the full per-stage numbers."""
    seconds = sum(meters[k].seconds for k in GENERATION_STAGES)
    row = {"label": label, "T": T, "seconds": seconds, "voxels": voxels, "gaussians": gaussians,
           "ss_s": meters["sparse_structure"].seconds, "slat_s": meters["slat"].seconds,
           "decode_s": meters["decode"].seconds,
           "peak_gib": max(meters[k].peak for k in GENERATION_STAGES) / GIB,
           "reserved_gib": max(meters[k].reserved for k in GENERATION_STAGES) / GIB,
           "stages": {k: {"seconds": meters[k].seconds, "peak_bytes": meters[k].peak,
                          "reserved_bytes": meters[k].reserved} for k in STAGES if k in meters}, **(extra or {})}
    if flops:
        total = sum(flops[k] for k in GENERATION_STAGES)
        row.update(pflop=total / 1e15, tflops=total / seconds / 1e12, model_calls=flops["model_calls"],
                   model_passes=flops["model_passes"])
        for k in GENERATION_STAGES:
            row["stages"][k]["flops"] = flops[k]
            row["stages"][k]["tflops"] = flops[k] / meters[k].seconds / 1e12
        if ceiling_tflops:
            row["fraction"] = row["tflops"] / ceiling_tflops
    return row


def tiny_images(T):
    from ss4d.io import FrameSelection, read_frames
    from ss4d.matting import matte_frames
    from ss4d.preprocess import preprocess_frames

    clip = read_frames(CLIP, FrameSelection(num_frames=T, stride=max(1, 32 // T)))
    return preprocess_frames(matte_frames(clip.frames)[0])[0]


def bench_cpu_tiny(frame_counts, threads, steps=None):
    from ss4d import Pipeline
    from ss4d.tiny import write_tiny_video_to_4d

    if threads:
        torch.set_num_threads(threads)
    print(f"# CPU, tiny random-weight pipeline (ss4d.tiny), {torch.get_num_threads()} torch thread(s), "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible")
    ceiling = matmul_ceiling("cpu", torch.float32, size=512, repeats=3)
    over = {"steps": steps} if steps else {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pipe = Pipeline.from_pretrained(write_tiny_video_to_4d(os.path.join(tmp, "tiny")))
        for T in frame_counts:
            images = tiny_images(T)
            run_stages(pipe, images[:2], ss_params={"steps": WARMUP_STEPS}, slat_params={"steps": WARMUP_STEPS})
            res = run_stages(pipe, images, ss_params=over, slat_params=over, count=True)
            rows.append(summarize("cpu-tiny", T, *res, ceiling_tflops=ceiling))
    return {"fp32_matmul_ceiling_tflops": ceiling, "rows": rows}


def bench_threads():
    """Generation time of the tiny pipeline with torch's default, ss4d's default and 1 thread."""
    import statistics

    from ss4d import Pipeline
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
        images = tiny_images(THREAD_COMPARE_FRAMES)
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


def _noise_images(T, size, seed=0):
    """T noise frames, the same for the same (T, size, seed) (rows compared by render need the same input)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.normal(128, 64, (size, size, 3)).clip(0, 255).astype(np.uint8)) for _ in range(T)]


def _gpu_row(pipe, label, T, params, ceiling, count=True, render_resolution=None, image_size=IMAGE_SIZE, keep=False):
    """One measured generation -> its table row (with ``keep``, the Gaussians under ``"gaussians_list"``,
    to be popped before the row is written)."""
    images = _noise_images(T, image_size)
    try:
        res = run_stages(pipe, images, ss_params=params, slat_params=params, render_resolution=render_resolution,
                         count=count, keep=keep)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        row = {"label": label, "T": T, "oom": True}
    else:
        torch.cuda.empty_cache()
        row = summarize(label, T, *res, ceiling_tflops=ceiling)
    print(f"  {label} T={T}: " + ("out of memory" if row.get("oom") else
                                  f"{row['seconds']:.1f} s, peak {row['peak_gib']:.2f} GiB"), flush=True)
    return row


def _compile_row(pipe, label, T, params, backend=None, **run):
    """The row with the structure flow compiled (``Pipeline.enable_compile``; CUDA graphs on CUDA):
    one one-step generation at the same T first compiles and captures (its seconds recorded as
    ``compile_warmup_s``), then the measured generation; eager again afterwards."""
    from ss4d.compile_flow import DEFAULT_BACKEND

    statuses = pipe.enable_compile(backend or DEFAULT_BACKEND)
    try:
        t0 = time.perf_counter()
        one = {**params, "steps": WARMUP_STEPS}
        run_stages(pipe, _noise_images(T, run["image_size"]), ss_params=one, slat_params=one, render_resolution=None)
        warmup = time.perf_counter() - t0
        row = _gpu_row(pipe, label, T, params, **run)
    finally:
        pipe.disable_compile()
    row.update(compile={k: v.describe() for k, v in statuses.items()}, compile_warmup_s=warmup)
    return row


def _fp8_row(pipe, label, T, params, reference=None, **run):
    """The row with FP8 trunk matmuls (``Pipeline.enable_fp8``) on copies of the flows (restored
    after), with the render PSNR / silhouette IoU against ``reference`` (the bf16 default row's
    Gaussians, same input and seed): frames 0, T/2 and T-1 from the four grid views at 128².
    Where FP8 cannot run, the row says why."""
    import copy

    from ss4d.fp8 import FP8_MODELS, fp8_missing
    from ss4d.render_compare import compare_renders, render_views

    missing = fp8_missing(pipe.device)
    if missing:
        print(f"  {label} T={T}: skipped (needs {' and '.join(missing)})", flush=True)
        return {"label": label, "T": T, "skipped_reason": "needs " + " and ".join(missing)}
    originals = {k: pipe.models[k] for k in FP8_MODELS}
    try:
        pipe.models.update({k: copy.deepcopy(m) for k, m in originals.items()})
        layers = pipe.enable_fp8()
        run_stages(pipe, _noise_images(2, run["image_size"]), ss_params={"steps": WARMUP_STEPS},
                   slat_params={"steps": WARMUP_STEPS}, render_resolution=None)
        row = _gpu_row(pipe, label, T, params, **run)
    finally:
        pipe.models.update(originals)
        pipe.fp8_layers = {}
        torch.cuda.empty_cache() if pipe.device.type == "cuda" else None
    row["fp8_layers"] = layers
    gaussians = row.get("gaussians_list")
    if reference is not None and gaussians is not None:
        frames = sorted({0, T // 2, T - 1})
        ref = [reference[t].to(pipe.device) if t in frames else None for t in range(len(reference))]
        psnr, iou = compare_renders(*render_views(gaussians, frames=frames), *render_views(ref, frames=frames))
        row.update(psnr_vs_bf16=psnr, iou_vs_bf16=iou, compared_frames=frames)
        print(f"  {label} T={T}: render PSNR vs bf16 {psnr:.2f} dB, silhouette IoU {iou:.4f}", flush=True)
    return row


def gpu_plan(frame_counts, dtype_names, memory_frames, fast=True, accel=True):
    """(label, dtype, T, preset, low_vram, count FLOPs, mode) per GPU row, in run order, the README
    table's figures first (so a spent time budget skips the least needed rows):

    1. first dtype, largest T: default, then fast;
    2. memory rows (one step per stage), first dtype: default and low-VRAM at the largest T and at
       ``memory_frames``, then low-VRAM with :data:`TIME_CHUNKS` at the longest of ``memory_frames``;
    3. with ``accel``, largest T, default preset: bf16 with FP8 trunk matmuls (mode ``fp8``, render
       PSNR against the bf16 default row), then the first dtype with the structure flow compiled
       (mode ``compile``; its compilation makes it the longest row);
    4. first dtype, the other T: default, fast;
    5. the other dtypes, largest T: default, fast.
    """
    first, largest = dtype_names[0], frame_counts[-1]

    def timed(name, T):
        return [(f"{name} default", name, T, "default", False, True, "")] + \
            ([(f"{name} fast", name, T, "fast", False, True, "")] if fast else [])

    plan = timed(first, largest)
    for T in [largest] + list(memory_frames):
        plan.append((f"{first} mem", first, T, "one_step", False, False, ""))
        plan.append((f"{first} mem low-vram", first, T, "one_step", True, False, ""))
    for T in list(memory_frames)[-1:]:
        plan.append((f"{first} mem low-vram chunked", first, T, "one_step_chunked", True, False, ""))
    if accel:
        plan.append(("bf16 default fp8", "bf16", largest, "default", False, False, "fp8"))
        plan.append((f"{first} default compile", first, largest, "default", False, False, "compile"))
    for T in frame_counts[:-1]:
        plan += timed(first, T)
    for name in dtype_names[1:]:
        plan += timed(name, largest)
    return plan


def bench_gpu_full(frame_counts, dtype_names, steps, memory_frames, fast=True, budget_s=None, render=False,
                   pipe=None, image_size=IMAGE_SIZE, ceiling_size=None, accel=True, compile_backend=None):
    """The GPU rows of :func:`gpu_plan`. ``pipe`` / ``image_size`` / ``ceiling_size`` /
    ``compile_backend`` let the tests run this same code on the CPU with the tiny pipeline (``pipe``
    given: its device is used)."""
    from ss4d.pipeline import DTYPES

    if pipe is None and not torch.cuda.is_available():
        print("\n# GPU, full size: SKIPPED (no CUDA device). Run this script on a CUDA machine to measure the "
              "released architectures with random weights at T=8/16/32.")
        return None
    t_start = time.perf_counter()
    device = pipe.device if pipe is not None else torch.device("cuda")
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    ceiling = matmul_ceiling(device, torch.bfloat16, **({"size": ceiling_size} if ceiling_size else {}))
    print(f"\n# {device_name}, random weights; measured bf16 matmul ceiling {ceiling:.1f} TFLOP/s", flush=True)
    if pipe is None:
        pipe = build_full_pipeline(device, DTYPES[dtype_names[0]])
    presets = {"default": {"steps": steps} if steps else {}, "fast": {**FAST_PRESET, **({"steps": steps} if steps else {})},
               "one_step": {"steps": WARMUP_STEPS}, "one_step_chunked": {"steps": WARMUP_STEPS, **TIME_CHUNKS}}
    rows, skipped, warmed, kept = [], [], set(), {}
    plan = gpu_plan(frame_counts, dtype_names, memory_frames, fast, accel)
    for label, name, T, preset, low_vram, count, mode in plan:
        if budget_s and time.perf_counter() - t_start > budget_s:
            skipped.append({"label": label, "T": T})
            continue
        if low_vram != pipe.low_vram:
            pipe.enable_low_vram(device) if low_vram else pipe.disable_low_vram()
        if pipe.dtype != DTYPES[name]:
            pipe.to(device, DTYPES[name])
        if name not in warmed:   # warm-up (kernels, allocator, cuBLAS handles), excluded from the figures
            run_stages(pipe, _noise_images(2, image_size), ss_params=presets["one_step"], slat_params=presets["one_step"], render_resolution=None)
            warmed.add(name)
        # the default row of the largest T keeps its Gaussians: the fp8 row is rendered against them
        keep = accel and preset == "default" and not mode and T == frame_counts[-1] and name == "bf16"
        run = dict(ceiling=ceiling, count=count, render_resolution=GPU_RENDER_RESOLUTION if render else None,
                   image_size=image_size, keep=keep or mode == "fp8")
        if mode == "compile":
            row = _compile_row(pipe, label, T, presets[preset], compile_backend, **run)
        elif mode == "fp8":
            row = _fp8_row(pipe, label, T, presets[preset], kept.get(("bf16", T)), **run)
        else:
            row = _gpu_row(pipe, label, T, presets[preset], **run)
        gaussians = row.pop("gaussians_list", None)
        if keep and gaussians is not None:   # parked on the CPU: not counted in the later rows' peaks
            kept[(name, T)] = [g.to("cpu") for g in gaussians]
        rows.append(row)
    if pipe.low_vram:
        pipe.disable_low_vram()
    if skipped:
        names = ", ".join(f"{r['label']} T={r['T']}" for r in skipped)
        print(f"  time budget of {budget_s} s spent: skipped {names}")
    from trellis_ext.attention import select_backend as attention_backend
    from trellis_ext.sparse.conv import select_backend as sparse_conv_backend

    probe = torch.zeros(1, 1, 1, 64, device=device, dtype=DTYPES[dtype_names[0]])
    return {"device": device_name, "bf16_matmul_ceiling_tflops": ceiling, "rows": rows,
            "skipped": skipped, "sparse_conv_backend": sparse_conv_backend(device),
            "attention_backend": attention_backend(probe, probe, probe), "gsplat_installed": _importable("gsplat"),
            "seconds": time.perf_counter() - t_start}


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (``scripts/gpu_bench.sh``'s passes are checked against it by the tests)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[2, 4, 8], help="CPU tiny-pipeline clip lengths")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--cpu-steps", type=int, help=f"CPU tiny pipeline: steps per stage (default {TINY_STEPS})")
    ap.add_argument("--gpu-frames", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--gpu-dtypes", nargs="+", default=["bf16", "fp16"], choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--memory-frames", type=int, nargs="*", default=[64, 128],
                    help="GPU: clip lengths measured for memory only (one step per stage)")
    ap.add_argument("--steps", type=int, help="GPU: steps per stage (default 25)")
    ap.add_argument("--no-fast", action="store_true", help="GPU: skip the fast-preset rows")
    ap.add_argument("--no-accel", action="store_true",
                    help="GPU: skip the torch.compile and FP8 rows (largest T, default preset)")
    ap.add_argument("--budget-s", type=float, default=GPU_BUDGET_S,
                    help=f"GPU: start no row after this many seconds (default {GPU_BUDGET_S}; 0 = no limit)")
    ap.add_argument("--gpu-render", action="store_true", help="GPU: also time one 512² render (gsplat)")
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU tiny-pipeline rows")
    ap.add_argument("--json", help="also write every number to this JSON file")
    ap.add_argument("--no-thread-compare", action="store_true", help="skip the CPU thread-count comparison")
    args = ap.parse_args(argv)
    if any(t < 2 or t % 2 for t in args.frames + args.gpu_frames + args.memory_frames):
        ap.error("frame counts must be even and >= 2")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    results = {"torch": torch.__version__, "date": time.strftime("%Y-%m-%d", time.gmtime()),
               "cpu_tiny": None if args.no_cpu else bench_cpu_tiny(args.frames, args.threads, args.cpu_steps),
               "cpu_threads": None if args.no_thread_compare else bench_threads(),
               "gpu_full": bench_gpu_full(args.gpu_frames, args.gpu_dtypes, args.steps, args.memory_frames,
                                          fast=not args.no_fast, budget_s=args.budget_s or None,
                                          render=args.gpu_render, accel=not args.no_accel)}
    results["wall_seconds"] = time.perf_counter() - t0
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    rows = (results["cpu_tiny"] or {}).get("rows", []) + (results["gpu_full"] or {}).get("rows", [])
    print("\n# per generation (condition + structure + latent + decode); peak over the stages; "
          "'of ceiling' = achieved / measured matmul rate (bf16 on GPU, fp32 on CPU)")
    print(format_table(rows, TABLE))
    return 0


if __name__ == "__main__":
    sys.exit(main())
