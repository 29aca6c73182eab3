#!/usr/bin/env python
"""The main job: ``ss4d-generate`` on the clip in ``assets/``, end to end.

It uses the model ``ss4d-generate`` picks without ``--model`` (``ss4d.default_model``): the official
SS4D weights when ``$SS4D_MODEL`` or ``checkpoints/SS4D`` gives them, else the small SS4D trained here
and shipped in ``checkpoints/ss4d-small`` (a small model trained on a few animated assets: a coarse
moving figure, not the released model's quality; see its model card). ``--tiny`` uses a tiny pipeline
with **random weights** instead (written to ``checkpoints/tiny_ss4d/``; an abstract shape, for checking
the path without any weights). Every run goes the whole way: video reading, matting, preprocessing,
both flow stages, decoding, PLY/npz export, renders, an animated GLB and .splat files, result.json.

Outputs go to ``outputs/demo/`` of the checkout (see ``result.json`` there); a rerun replaces that
previous demo output and nothing else. Relative ``-o``/``--video``/``--model`` paths and every
argument after ``--`` mean what they mean in the folder you run the script from; any other ``-o``
is never overwritten (``ss4d-generate`` refuses an occupied folder). Extra arguments after ``--``
are passed to ``ss4d-generate`` unchanged, e.g. ``python scripts/demo.py -- --render grid``.
"""
import argparse
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

CLIP = os.path.join(REPO, "assets", "dancing_robot_fg.mp4")
TINY = os.path.join(REPO, "checkpoints", "tiny_ss4d")
#: The files people open elsewhere: an animated GLB and .splat per frame (README "Exports").
EXPORTS = ["--export", "glb,splat", "--mesh-quality", "fast"]
DEFAULT_OUTPUT = os.path.join(REPO, "outputs", "demo")


def _shown(path: str) -> str:
    """A path as the caller would type it: relative to their folder when inside it."""
    rel = os.path.relpath(path)
    return path if rel.startswith(os.pardir) else rel


def generate_command() -> list:
    """The installed console script, or the module when the package is not installed."""
    exe = os.path.join(os.path.dirname(sys.executable), "ss4d-generate")
    return [exe] if os.path.isfile(exe) else [sys.executable, "-m", "ss4d.cli"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", default=DEFAULT_OUTPUT,
                    help="output folder (default: outputs/demo of the checkout, replaced on each run)")
    ap.add_argument("--model", help="an SS4D model folder (default: ss4d-generate's default, e.g. the shipped "
                                    "small model checkpoints/ss4d-small)")
    ap.add_argument("--tiny", action="store_true", help="use the tiny random-weight pipeline instead")
    ap.add_argument("--frames", type=int, default=8, help="frames of the clip to use (even; default 8)")
    ap.add_argument("--stride", type=int, default=4, help="use every K-th frame (default 4: 8 frames span 2 s)")
    ap.add_argument("--video", default=CLIP, help="input clip (default: assets/dancing_robot_fg.mp4)")
    ap.add_argument("extra", nargs="*", help="arguments for ss4d-generate (after --)")
    args = ap.parse_args()
    # relative paths mean the caller's folder (argparse keeps them relative; the child runs there too)
    args.output, args.video = os.path.abspath(args.output), os.path.abspath(args.video)
    if args.model is not None:
        args.model = os.path.abspath(args.model)

    t0 = time.time()
    from ss4d.default_model import NOTHING_FOUND, resolve_model

    model, how = resolve_model(args.model)
    if args.tiny or how == NOTHING_FOUND:
        model = TINY
        if not os.path.isfile(os.path.join(TINY, "pipeline.json")):
            print(f"[demo] writing a tiny pipeline with RANDOM weights to {os.path.relpath(TINY, REPO)}/ "
                  f"({'--tiny' if args.tiny else 'no model folder found'})", flush=True)
            from ss4d.tiny import write_tiny_video_to_4d

            write_tiny_video_to_4d(TINY)
        print("[demo] NOTE: the weights are RANDOM, so the result is an abstract blob, not the robot; "
              "it shows every stage working. Pass --model <SS4D folder> for the real model.", flush=True)
    else:
        print(f"[demo] model: {_shown(model)} ({how})", flush=True)
    replace = ["--overwrite"] if args.output == DEFAULT_OUTPUT else []  # only the demo's own folder
    cmd = generate_command() + [args.video, "-o", args.output, "--model", model, "--frames", str(args.frames),
                                "--stride", str(args.stride)] + replace + EXPORTS + args.extra
    print("[demo] $ " + " ".join(_shown(c) if os.path.isabs(c) else c for c in cmd), flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    code = subprocess.call(cmd, env=env)
    if code == 0:
        print(f"[demo] done in {time.time() - t0:.1f} s: open {_shown(args.output)}/renders/*.mp4; "
              f"per-frame Gaussians in gaussians/*.ply and splat/*.splat, the animated mesh in animation.glb, "
              f"voxels in coords/*.npz, settings in result.json", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
