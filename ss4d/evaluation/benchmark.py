"""``ss4d-eval benchmark``: animated assets -> ground truth + input video -> a model -> scores -> a report.

1. The data toolkit builds a small dataset from the assets (``ss4d-build-dataset`` steps ``mesh,
   voxelize, render, cond``): ``frames`` frames per clip (the first animation of each asset, or those named
   by ``animations``), ``views``
   orbit views at ``resolution``², and the input video from its fixed ``front`` conditioning camera
   (so the alignment of :mod:`ss4d.evaluation.alignment` is exact).
2. ``ss4d-generate`` runs on each clip's conditioning frames (``--render none``).
3. :func:`ss4d.evaluation.asset.score_asset` scores each output at the ground-truth cameras; FVD is
   pooled over every (asset, view) clip of the run.

Report folder (written atomically)::

    report.json          settings, per asset {metrics, views, sample} and overall {metric: value/status/reason}
    report.md            the same as Markdown tables (per asset and overall) + what was skipped and why
    contact_sheet.png    per asset: input frames, generated and ground-truth novel views at K times
    dataset/             the ground-truth dataset (FolderDataset layout)
    outputs/<clip_id>/   the generated outputs (ss4d-generate layout)
"""
from __future__ import annotations

import contextlib
import io
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import InputError
from ..io.output import BENCHMARK_PRODUCER, BENCHMARK_REPORT as REPORT_JSON
from .scoring import Evaluator, aggregate

__all__ = ["BenchmarkSettings", "run_benchmark", "build_ground_truth", "SHEET_VIEW", "DATASET_DIR", "OUTPUTS_DIR",
           "PAPER_PROTOCOL", "CPU_PROTOCOL"]

DATASET_DIR = "dataset"
OUTPUTS_DIR = "outputs"
REPORT_MD, SHEET_PNG = "report.md", "contact_sheet.png"
SHEET_VIEW = 0          # the ground-truth view shown in the contact sheet
GT_STEPS = ("mesh", "voxelize", "render", "cond")
#: (views, frames, resolution): the paper's protocol (CUDA default) and a CPU smoke run (a few minutes for
#: the six shipped assets with the tiny pipeline; the CPU Gaussian rasteriser dominates the time)
PAPER_PROTOCOL = (32, 32, 512)
CPU_PROTOCOL = (4, 8, 128)


@dataclass
class BenchmarkSettings:
    views: int = CPU_PROTOCOL[0]
    frames: int = CPU_PROTOCOL[1]
    resolution: int = CPU_PROTOCOL[2]
    fps: Optional[float] = None
    animations: str = "first"   # the data toolkit's --animations: first | all | comma-separated names
    time_mode: str = "clamp"    # the data toolkit's --time-mode (e.g. stretch: the frames span each clip)
    renderer: str = "torch"
    seed: int = 42
    sheet_times: int = 4
    progress: bool = True


def build_ground_truth(assets: str | Path, out: Path, s: BenchmarkSettings) -> tuple[list[dict], dict[str, str]]:
    """Build the ground-truth dataset with the data toolkit: (clip records, {asset: why it failed});
    raises when no clip could be built."""
    from ..data.build import DEFAULT_EXTENSIONS, DEFAULT_FPS, BuildConfig, DatasetBuilder, find_assets
    from ..data.layout import FolderDataset
    from ..data.render import RenderSettings

    paths = [str(assets)]
    if not find_assets(paths, DEFAULT_EXTENSIONS):
        raise InputError(f"no animated assets found in {assets}", "pass glTF/GLB files or a folder of them")
    render = RenderSettings(num_views=s.views, resolution=s.resolution, cond_camera="front",
                            cond_resolution=s.resolution, cond_video=False)
    cfg = BuildConfig(output=out, frames=s.frames, fps=s.fps or DEFAULT_FPS, render=render, renderer=s.renderer,
                      steps=GT_STEPS, progress=s.progress, animations=s.animations, time_mode=s.time_mode)
    summary = DatasetBuilder(cfg).run(paths)
    records = [r for r in FolderDataset(out).clip_records() if r.get("status") == "ok"]
    failures = {f["asset"] + (f" ({f['clip']})" if f["clip"] else ""): f"ground truth failed at {f['step']}: "
                f"{f['error']}" for f in summary.failures}  # RunSummary.failures: asdict(Failure)
    if not records:
        raise InputError(f"the data toolkit produced no clip from {assets} "
                         f"({'; '.join(f'{k}: {v}' for k, v in failures.items()) or 'no clips'})",
                         "check the assets with ss4d-build-dataset")
    return records, failures


def _generate(cond_dir: Path, model: str, out: Path, frames: int, seed: int, device: torch.device) -> Optional[str]:
    """Run ``ss4d-generate`` in-process; None on success, else its error line."""
    from ..cli import main as generate

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = generate([str(cond_dir), "-o", str(out), "--model", str(model), "--frames", str(frames),
                         "--seed", str(seed), "--render", "none", "--quiet", "--no-progress",
                         "--device", device.type])
    if code == 0:
        return None
    lines = [ln for ln in err.getvalue().strip().splitlines() if ln.strip()]
    return lines[-1] if lines else f"ss4d-generate exited with {code}"


def _sheet_rows(clip_id: str, cond: np.ndarray, frames: dict, times: list[int]) -> list:
    from .report import over_white

    return [(f"{clip_id}: input (t = {', '.join(map(str, times))})",
             [over_white(cond[t].astype(np.float32) / 255.0) for t in times]),
            (f"{clip_id}: generated, view {SHEET_VIEW}", [frames[(t, SHEET_VIEW)][0] for t in times]),
            (f"{clip_id}: ground truth, view {SHEET_VIEW}", [frames[(t, SHEET_VIEW)][1] for t in times])]


def run_benchmark(assets: str | Path, model: str | Path, report_dir: str | Path, s: BenchmarkSettings,
                  evaluator: Evaluator, device: torch.device, overwrite: bool = False) -> str:
    """Run the benchmark (see the module docstring); returns the Markdown report."""
    from tqdm import tqdm

    from ..data.layout import FolderDataset
    from ..io.output import OutputFolder
    from .asset import open_sample, read_output, score_asset
    from .report import contact_sheet, write_json, write_text

    if not Path(model).is_dir():
        raise InputError(f"model folder {model} does not exist", "pass an SS4D pipeline folder with --model")
    if not Path(assets).exists():
        raise InputError(f"{assets} does not exist", "pass animated glTF/GLB files or a folder of them")
    t0 = time.time()
    folder = OutputFolder(report_dir, overwrite)
    with folder as tmp:
        records, failures = build_ground_truth(assets, tmp / DATASET_DIR, s)
        dataset = FolderDataset(tmp / DATASET_DIR)
        times = sorted(set(np.linspace(0, s.frames - 1, min(s.sheet_times, s.frames)).round().astype(int).tolist()))
        per_asset, sheet, pooled, random_weights = {}, [], {}, False
        bar = tqdm(records, desc="benchmark", disable=not s.progress)
        for rec in bar:
            clip_id = rec["clip_id"]
            out = tmp / OUTPUTS_DIR / clip_id
            err = _generate(dataset.paths(clip_id).cond, str(model), out, s.frames, s.seed, device)
            if err is not None:
                failures[clip_id] = f"generation failed: {err}"
                continue
            output = read_output(out)
            random_weights = random_weights or output.random_weights
            _, record = open_sample(tmp / DATASET_DIR, clip_id)
            score = score_asset(output, dataset, record, evaluator, device=device, keep_frames=(SHEET_VIEW,))
            per_asset[clip_id] = score.summary
            pooled.update({f"{clip_id}/{v}": vs for v, vs in score.views.items()})
            cond, _ = dataset.load_cond(clip_id)
            sheet += _sheet_rows(clip_id, cond, score.frames, [t for t in times if t < output.num_frames])
        if not per_asset:
            raise InputError(f"no asset could be scored ({'; '.join(f'{k}: {v}' for k, v in failures.items())})",
                             "check the model folder with ss4d-generate")
        overall = aggregate(per_asset, pooled, evaluator)
        report = {"settings": asdict(s), "model": str(model), "assets": str(assets), "device": str(device),
                  "random_weights": random_weights, "overall": overall, "per_asset": per_asset,
                  "failures": failures, "seconds": round(time.time() - t0, 1)}
        md = _markdown(report)
        write_text(tmp / REPORT_MD, md)
        contact_sheet(sheet, tmp / SHEET_PNG)
        # written last, as the folder's manifest: the files in it that a rerun with --overwrite may replace
        report["command"] = [BENCHMARK_PRODUCER, "benchmark"]
        report["files"] = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        write_json(tmp / REPORT_JSON, report)
    return md + f"\nwrote {folder.path}/{{{REPORT_JSON},{REPORT_MD},{SHEET_PNG}}}\n"


def _markdown(report: dict) -> str:
    from .report import metrics_table

    s = report["settings"]
    lines = ["# ss4d-eval benchmark", "",
             f"model `{report['model']}`, assets `{report['assets']}`: {len(report['per_asset'])} clips scored, "
             f"{s['frames']} frames x {s['views']} views at {s['resolution']}² (ground truth: data toolkit, "
             f"{s['renderer']} renderer; input: its front conditioning camera), device {report['device']}, "
             f"{report['seconds']} s.", ""]
    if report["random_weights"]:
        lines += ["**The model has RANDOM weights**: these numbers check the pipeline, not quality.", ""]
    rows = {k: v["metrics"] for k, v in report["per_asset"].items()}
    rows["**overall**"] = report["overall"]
    lines.append(metrics_table(rows, title="Scores (per asset; overall = mean over assets, FVD pooled)"))
    lines += ["## Per metric", ""]
    for m, e in report["overall"].items():
        if e["status"] == "computed":
            extra = f" over {e['clips']} clips" if "clips" in e else (f" over {e['items']} assets" if "items" in e
                                                                      else "")
            lines.append(f"- {m}: computed{extra}")
        else:
            lines.append(f"- {m}: skipped — {e.get('reason')}")
    if report["failures"]:
        lines += ["", "## Not scored", ""] + [f"- {k}: {v}" for k, v in report["failures"].items()]
    return "\n".join(lines) + "\n"
