"""``ss4d-eval``: score image sequences, a generated 4D output, or run the 4D benchmark.

Exit codes (as ``ss4d-generate``): 0 success, 2 bad input (one line: what is wrong and what to do),
1 internal error, 130 interrupted. ``--debug`` adds the traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from ..exit_codes import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, report_error
from ..errors import InputError

__all__ = ["main", "build_parser", "PROG"]

PROG = "ss4d-eval"
BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}

DESCRIPTION = """\
Evaluate 4D generation with the SS4D paper's protocol: PSNR, SSIM, LPIPS (VGG, AlexNet), CLIP-S,
FVD and flicker, plus silhouette IoU and Chamfer distance. Networks (LPIPS backbones, CLIP, I3D) are
read from local files only (--weights DIR or $SS4D_EVAL_WEIGHTS, see docs/evaluation.md); a metric
without its weights is reported as null with the reason.
"""

EPILOG = """\
examples:
  ss4d-eval images --pred renders/ --gt gt/ --crop gt-bbox -o metrics.json
  ss4d-eval images --pred mine/trump --gt consistent4d/gt/trump --layout consistent4d
  ss4d-eval asset --output outputs/fox --gt dataset/clips/Fox__0-Survey --views 32 -o fox.json
  ss4d-eval benchmark --assets ../shared/data/assets --model checkpoints/tiny_ss4d -o reports/tiny
"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2)."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{PROG}: error: {message} (see {PROG} --help)\n")


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _background(s: str) -> tuple:
    if s in BACKGROUNDS:
        return BACKGROUNDS[s]
    try:
        vals = tuple(float(v) for v in s.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3 or not all(0 <= v <= 1 for v in vals):
        raise argparse.ArgumentTypeError(f"background must be white, black or R,G,B in [0, 1], got {s!r}")
    return vals


def _metrics(s: str):
    from .scoring import METRICS

    if s == "auto":
        return "auto"
    names = [m.strip() for m in s.split(",") if m.strip()]
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown metric(s) {', '.join(bad) or s!r}; use auto or a comma list of "
                                         f"{', '.join(METRICS)}")
    return names


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("metrics and weights")
    g.add_argument("--metrics", type=_metrics, default="auto", metavar="LIST",
                   help="auto (every metric whose weights are found; the rest reported as skipped) or a comma list "
                        "that must all be computed (missing weights are then an error)")
    g.add_argument("--weights", metavar="DIR", help="weights folder (default $SS4D_EVAL_WEIGHTS or checkpoints/eval)")
    g.add_argument("--vgg16", metavar="PATH", help="torchvision VGG16 state dict for LPIPS-VGG")
    g.add_argument("--alexnet", metavar="PATH", help="torchvision AlexNet state dict for LPIPS-Alex")
    g.add_argument("--clip-model", metavar="DIR", help="transformers folder of openai/clip-vit-base-patch32")
    g.add_argument("--i3d", metavar="PATH", help="I3D TorchScript (i3d_torchscript.pt) for FVD")
    g.add_argument("--crop", choices=("none", "gt-bbox"), default="none",
                   help="gt-bbox: crop both sides to the ground truth's box per view (default none)")
    g.add_argument("--background", type=_background, default=BACKGROUNDS["white"], metavar="COLOUR",
                   help="composite RGBA over white (default), black or R,G,B in [0, 1]")
    g.add_argument("--device", default="auto", help="torch device (default: cuda if available)")
    g.add_argument("--debug", action="store_true", help="show tracebacks")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("images", help="compare two folders of per-view, per-frame images",
                       description="Compare DIR/<view>/<frame>.png (prediction) with the same layout (ground truth).")
    s.add_argument("--pred", required=True, metavar="DIR")
    s.add_argument("--gt", required=True, metavar="DIR")
    s.add_argument("--layout", choices=("folders", "consistent4d"), default="folders",
                   help="consistent4d: the Consistent4D test set (<object>/eval_*/<frame>.png; a root of objects or one "
                        "object; overall = mean over objects, FVD pooled)")
    s.add_argument("-o", "--output", metavar="JSON", help="write the results here (and a .md table beside it)")
    _common(s)

    s = sub.add_parser("asset", help="render a generated output at a dataset sample's cameras and score it")
    s.add_argument("--output", required=True, metavar="OUT", help="an ss4d-generate output folder")
    s.add_argument("--gt", required=True, metavar="SAMPLE",
                   help="a clip folder of an ss4d-build-dataset dataset (<dataset>/clips/<id>), or the dataset")
    s.add_argument("--clip", metavar="ID", help="clip id when --gt is a dataset folder with several clips")
    s.add_argument("--views", type=_positive_int, metavar="N", help="score the first N ground-truth views (default all)")
    s.add_argument("--resolution", type=_positive_int, metavar="PX", help="render/compare size (default the GT's)")
    s.add_argument("--alignment", choices=("input-view", "canonical"), default="input-view",
                   help="input-view (default): the input was seen from the toolkit's front camera; canonical: none")
    s.add_argument("-o", "--report", metavar="JSON", help="write the results here (and a .md table beside it)")
    s.add_argument("--save-renders", metavar="DIR",
                   help="also write the compared images as DIR/{pred,gt}/<view>/<frame>.png (ss4d-eval images' layout)")
    s.add_argument("--overwrite", action="store_true", help="replace --save-renders DIR if it exists")
    _common(s)

    from ..data.build import BUILD_TIME_MODES

    s = sub.add_parser("benchmark", help="render animated assets, run a model, score it, write a report")
    s.add_argument("--assets", required=True, metavar="DIR", help="animated glTF/GLB files or a folder of them")
    s.add_argument("--model", required=True, metavar="FOLDER", help="SS4D pipeline folder (ss4d-generate --model)")
    s.add_argument("-o", "--output", required=True, metavar="REPORT", help="report folder (written atomically)")
    s.add_argument("--overwrite", action="store_true", help="replace REPORT if it exists")
    s.add_argument("--views", type=_positive_int, metavar="N",
                   help="orbit views per frame (default: 32 on CUDA as the paper, 4 on CPU)")
    s.add_argument("--frames", type=_positive_int, metavar="T",
                   help="frames per clip, even (default: 32 on CUDA as the paper, 8 on CPU)")
    s.add_argument("--resolution", type=_positive_int, metavar="PX",
                   help="ground-truth and render size (default: 512 on CUDA as the paper, 128 on CPU)")
    s.add_argument("--fps", type=float, default=None, metavar="F",
                   help="animation sampling rate (default: the data toolkit's 24)")
    s.add_argument("--animations", default="first", metavar="LIST",
                   help="clips to score: first (default), all, or comma-separated animation names (the data "
                        "toolkit's --animations; an asset with none of them is reported as failed)")
    s.add_argument("--time-mode", choices=BUILD_TIME_MODES, default="clamp",
                   help="how frames sample a clip (the data toolkit's --time-mode; stretch: spread them over it)")
    s.add_argument("--renderer", choices=("auto", "blender", "torch"), default="torch",
                   help="ground-truth renderer of the data toolkit (default torch: no Blender needed)")
    s.add_argument("--seed", type=int, default=42, help="generation seed (default 42)")
    s.add_argument("--sheet-times", type=_positive_int, default=4, metavar="K",
                   help="frames shown per asset in the contact sheet (default 4)")
    s.add_argument("--no-progress", action="store_true")
    _common(s)
    return p


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}", "use auto, cpu or cuda") from None


def _evaluator(args, device):
    from .scoring import Evaluator

    return Evaluator.create(args.metrics, weights_folder=args.weights, vgg_weights=args.vgg16,
                            alex_weights=args.alexnet, clip_model=args.clip_model, i3d_weights=args.i3d,
                            device=device, background=args.background, crop=args.crop)


def _write_results(summary: dict, path: Optional[str], title: str, rows: Optional[dict] = None) -> None:
    from .report import metrics_table, write_json, write_text

    table = metrics_table(rows or {title: summary["metrics"]}, title=title)
    print(table)
    if path:
        out = Path(path)
        if out.is_dir():
            raise InputError(f"{out} is a folder", "give a .json file path with -o")
        write_json(out, summary)
        write_text(out.with_suffix(".md"), table + "\n")
        print(f"wrote {out} and {out.with_suffix('.md')}")


def _images(args) -> int:
    from .images import score_consistent4d, score_folders

    device = _device(args.device)
    title = f"{Path(args.pred).name} vs {Path(args.gt).name}"
    if args.layout == "consistent4d":
        summary = score_consistent4d(args.pred, args.gt, _evaluator(args, device))
        rows = {name: s["metrics"] for name, s in summary["objects"].items()}
        rows["**overall**"] = summary["metrics"]
        _write_results(summary, args.output, title, rows)
    else:
        _write_results(score_folders(args.pred, args.gt, _evaluator(args, device)), args.output, title)
    return EXIT_OK


def _asset(args) -> int:
    from ..io.output import OutputFolder
    from .asset import open_sample, read_output, save_renders, score_asset

    device = _device(args.device)
    output = read_output(args.output)
    dataset, record = open_sample(args.gt, args.clip)
    renders = OutputFolder(args.save_renders, args.overwrite) if args.save_renders else None  # checked up front
    ev = _evaluator(args, device)
    score = score_asset(output, dataset, record, ev, views=args.views, resolution=args.resolution,
                        alignment=args.alignment, device=device, keep_images=renders is not None)
    if renders is not None:
        with renders as tmp:
            save_renders(score, tmp)
    if output.random_weights:
        score.summary["note"] = "the output was generated with RANDOM weights: its scores say nothing about quality"
    _write_results(score.summary, args.report, record["clip_id"])
    return EXIT_OK


def _benchmark(args) -> int:
    from .benchmark import CPU_PROTOCOL, PAPER_PROTOCOL, BenchmarkSettings, run_benchmark

    device = _device(args.device)
    views, frames, resolution = PAPER_PROTOCOL if device.type == "cuda" else CPU_PROTOCOL
    views, frames, resolution = args.views or views, args.frames or frames, args.resolution or resolution
    if frames % 2:
        raise InputError(f"--frames {frames} is odd", "SS4D needs an even number of frames")
    settings = BenchmarkSettings(views=views, frames=frames, resolution=resolution, fps=args.fps,
                                 animations=args.animations, time_mode=args.time_mode, renderer=args.renderer,
                                 seed=args.seed, sheet_times=args.sheet_times, progress=not args.no_progress)
    report = run_benchmark(args.assets, args.model, args.output, settings, _evaluator(args, device), device,
                           overwrite=args.overwrite)
    print(report)
    return EXIT_OK


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, already printed)
        return int(e.code or 0)
    try:
        return {"images": _images, "asset": _asset, "benchmark": _benchmark}[args.command](args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001  (the one place that turns exceptions into exit codes)
        return report_error(PROG, e, args.debug)


if __name__ == "__main__":
    sys.exit(main())
