#!/usr/bin/env python
"""The main job: ``ss4d-generate`` on the clip in ``assets/``, end to end.

Until trained weights ship, it uses a tiny pipeline with **random weights** that it writes to
``checkpoints/tiny_ss4d/`` on first use (a few seconds; ignored by git). Random weights mean the
Gaussians are an abstract shape, not the dancing robot: the demo shows the whole path working
(video reading, matting, preprocessing, both flow stages, decoding, PLY/npz export, renders,
an animated GLB and .splat files, result.json). With ``--model PATH`` pointing at the official SS4D
folder it runs the real thing.

Outputs go to ``outputs/demo/`` (see ``result.json`` there). Extra arguments after ``--`` are
passed to ``ss4d-generate`` unchanged, e.g. ``python scripts/demo.py -- --render grid``.
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


def generate_command() -> list:
    """The installed console script, or the module when the package is not installed."""
    exe = os.path.join(os.path.dirname(sys.executable), "ss4d-generate")
    return [exe] if os.path.isfile(exe) else [sys.executable, "-m", "ss4d.cli"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", default=os.path.join(REPO, "outputs", "demo"))
    ap.add_argument("--model", help="an SS4D model folder (default: the tiny random-weight pipeline)")
    ap.add_argument("--frames", type=int, default=8, help="frames of the clip to use (even; default 8)")
    ap.add_argument("--stride", type=int, default=4, help="use every K-th frame (default 4: 8 frames span 2 s)")
    ap.add_argument("--video", default=CLIP, help="input clip (default: assets/dancing_robot_fg.mp4)")
    ap.add_argument("extra", nargs="*", help="arguments for ss4d-generate (after --)")
    args = ap.parse_args()

    t0 = time.time()
    model = args.model
    if model is None:
        model = TINY
        if not os.path.isfile(os.path.join(TINY, "pipeline.json")):
            print(f"[demo] writing a tiny pipeline with RANDOM weights to {os.path.relpath(TINY, REPO)}/ "
                  f"(no trained SS4D weights are bundled)", flush=True)
            from ss4d.tiny import write_tiny_video_to_4d

            write_tiny_video_to_4d(TINY)
        print("[demo] NOTE: the weights are RANDOM, so the result is an abstract blob, not the robot; "
              "it shows every stage working. Pass --model <SS4D folder> for the real model.", flush=True)
    cmd = generate_command() + [args.video, "-o", args.output, "--model", model, "--frames", str(args.frames),
                                "--stride", str(args.stride), "--overwrite"] + EXPORTS + args.extra
    print("[demo] $ " + " ".join(os.path.relpath(c, REPO) if c.startswith(REPO) else c for c in cmd), flush=True)
    code = subprocess.call(cmd, cwd=REPO)
    if code == 0:
        print(f"[demo] done in {time.time() - t0:.1f} s: open {os.path.relpath(args.output, REPO)}/renders/*.mp4; "
              f"per-frame Gaussians in gaussians/*.ply and splat/*.splat, the animated mesh in animation.glb, voxels in "
              f"coords/*.npz, settings in result.json", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
