#!/usr/bin/env python
"""The small SS4D trained here, end to end (``make small-model``): SS4D's recipe in miniature.

    python scripts/train/small_model.py [--out outputs/small_model] [--dest checkpoints/ss4d-small]
                                        [--data-list DEST/data.json] [--data-root ../shared/data]
                                        [--scale 1.0] [--skip-eval]

1. **data**: the asset files listed in ``DEST/data.json`` (each checked against its SHA-256; nothing is
   fetched) are built into one dataset with ``ss4d-build-dataset``, a call per group of the list (its clip
   selection), with the torch renderer and the tiny random DINOv2. The list's ``procedural`` set (seeded
   figures of ``ss4d.data.procedural``, written into ``OUT/procedural/``) joins the same dataset for the
   structure stages only (its ``steps``: meshes, voxels, conditioning video, SS latents; no views, features
   or SLat latents, so the SLat stages never see it).
2. **3D pretraining**: the SS VAE, then TRELLIS's 3D classes (``ss4d.models.per_frame``) on single frames:
   structure flow, SLat VAE, SLat flow (on latents of the 3D encoder).
3. **inflate + progressive 4D fine-tuning** (``--init inflate:RUN``): structure flow, SLat VAE, SLat flow (on
   latents re-encoded by the 4D encoder), each 2 -> 4 -> 8 frames (the paper's 8 -> 16 -> 32 scaled down).
4. **export** ``OUT/model`` (the 4D stages) and ``OUT/per_frame_3d`` (the 3D stages: the "no temporal
   layers" baseline), then install ``OUT/model``'s files into ``DEST`` one by one (``DEST``'s model card,
   data list and pictures stay) with ``DEST/reference.json`` (its outputs on a fixed input, for the tests) and
   ``DEST/training.json`` (steps, wall times, losses, hardware).
5. **demo and evaluation**: ``DEST/demo_sheet.png`` (the demo clip beside the model's views); unless
   ``--skip-eval``, ``ss4d-eval benchmark`` of the small model, the per-frame 3D model and the tiny random
   pipeline on the held-out clips of the training assets and on the held-out assets (``DEST/eval.json``, the
   small model's contact sheets); then the results tables of the model card ``DEST/README.md`` are rewritten.

Configs: ``configs/train/small/*.json`` (``--scale`` multiplies every phase's steps, e.g. 0.05 for a smoke
run). Every stage resumes: rerunning after an interruption continues where it stopped. Seeds are fixed
(the configs' ``trainer.seed``, the builder's ``--seed``), so a rerun on the same machine reproduces the weights;
``OUT/timings.json`` records each step's wall time and the final losses.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

CONFIGS = REPO / "configs" / "train" / "small"
DEFAULT_DEST = REPO / "checkpoints" / "ss4d-small"
DEFAULT_OUT = REPO / "outputs" / "small_model"
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data"
DATA_LIST = "data.json"          # DEST/data.json: the asset files, their SHA-256 and roles
FEATURES = "tiny-random"         # the condition/feature encoder (DINOv2 cannot be had here)
PROCEDURAL_GENERATOR = "ss4d.data.procedural"   # the one generator of the list's "procedural" set
STRUCTURE_FLOW_CONFIGS = ("ss_flow_3d", "ss_flow_4d")   # the configs that read the SS latents
BUILD_ARGS = ["--frames", "8", "--time-mode", "stretch", "--views", "16",
              "--resolution", "128", "--renderer", "torch", "--feature-model", FEATURES,
              "--voxel-resolution", "32", "--seed", "0", "--no-progress"]
BUILD_SUMMARY = "summary_rank0.json"   # ss4d-build-dataset's summary of its last call (the steps it ran / skipped)
EXPORT_STEPS = 25                # Euler steps per stage written into pipeline.json (the released setting)
#: CFG of the structure stage in pipeline.json: the released 7.5 over-fills this small flow's structures (limbs
#: merge into a blob); 3 keeps them (chosen by looking at the demo clip's voxels at 3 / 7.5 / 15, see the card)
SS_CFG = 3.0
DEMO_ARGS = ["--frames", "8", "--stride", "4", "--seed", "42", "--device", "cpu"]   # as scripts/demo.py runs it
DEMO_SHEET_FRAMES = (0, 2, 4, 6)
AFTER_INSTALL = ("demo", "eval ")   # timings.json steps that run after the install (not in the recipe's time)
EVAL_ARGS = ["--time-mode", "stretch", "--frames", "8", "--views", "4", "--resolution", "128",
             "--device", "cpu", "--no-progress", "--overwrite"]


RESULTS_BEGIN = "<!-- results: written by scripts/train/small_model.py from training.json and eval.json -->"
RESULTS_END = "<!-- /results -->"
CARD_METRICS = (("iou", True), ("psnr", True), ("ssim", True), ("flicker", False), ("chamfer", False))
MODEL_TITLES = {"small": "ss4d-small (this model)", "per_frame_3d": "the same, 3D model per frame (no temporal layers)",
                "random": "tiny random-weight pipeline"}


def _read_video(path: Path):
    import imageio.v3 as iio

    return iio.imread(path)


def _newer(path: Path, than: Path) -> bool:
    return path.is_file() and path.stat().st_mtime >= than.stat().st_mtime


def _newest_model_file(folder: Path) -> Path:
    """The most recently written of a pipeline folder's model files (``pipeline.json`` and the files in its
    sub-folders: a retrain may change only the weights; the card, sheets and reports beside them do not count)."""
    files = [folder / "pipeline.json"] + [f for f in folder.glob("*/**/*") if f.is_file()]
    return max(files, key=lambda f: f.stat().st_mtime)


def recipe_seconds(seconds: dict) -> float:
    """Wall time of the recipe up to the install: every step of ``timings.json`` but those after it."""
    return sum(v for k, v in seconds.items() if not k.startswith(AFTER_INSTALL))


def log(msg: str) -> None:
    print(f"[small-model] {msg}", flush=True)


class Recipe:
    def __init__(self, args):
        self.out = Path(args.out).resolve()
        self.dest = Path(args.dest).resolve()
        self.data_root = Path(args.data_root).resolve()
        self.data_list = Path(args.data_list).resolve() if args.data_list else self.dest / DATA_LIST
        self.scale = args.scale
        self.data = self.out / "data"
        self.runs = self.out / "runs"
        self.py = sys.executable
        self.timings_file = self.out / "timings.json"
        self.timings = json.loads(self.timings_file.read_text()) if self.timings_file.is_file() else {}
        self.procedural_written: set = set()   # procedural folders written by this run (procedural_folder)
        self.encoder_run: Path | None = None   # the run that trained the condition encoder, once it has
        # the thread count changes floating-point sums, so every step runs on one pinned count: the given one, else the cores
        self.env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS") or str(os.cpu_count()),
                        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))

    # ------------------------------------------------------------------ helpers
    def run(self, name: str, cmd: list, resumes: bool = True) -> None:
        """Run one step; its wall time goes to ``timings.json``: added to the earlier time of a step that resumes
        (a dataset build or training run continues after an interruption), in place of it for one that starts over
        (``resumes=False``: an export, the demo, an evaluation)."""
        log(f"{name}: $ {' '.join(str(c) for c in cmd)}")
        t0 = time.time()
        code = subprocess.call([str(c) for c in cmd], env=self.env, cwd=REPO)
        if code != 0:
            sys.exit(f"[small-model] {name} failed (exit {code}); rerun to resume")
        earlier = self.timings.get("seconds", {}).get(name, 0) if resumes else 0
        self.timings.setdefault("seconds", {})[name] = round(earlier + time.time() - t0, 1)
        self.out.mkdir(parents=True, exist_ok=True)
        self.timings_file.write_text(json.dumps(self.timings, indent=1))

    def config(self, name: str) -> Path:
        """configs/train/small/<name>.json with every phase's steps scaled (OUT/configs/<name>.json); once a run
        has trained the condition encoder (``conditioning.train_encoder``), every later flow conditions on it."""
        from ss4d.training.cond_encoder import RUN_PREFIX
        from ss4d.training.stages import STAGES

        cfg = json.loads((CONFIGS / f"{name}.json").read_text())
        if self.encoder_run is not None and STAGES[cfg["stage"]].needs_cond:
            cfg.setdefault("conditioning", {})["encoder"] = f"{RUN_PREFIX}{self.encoder_run}"
        for phase in cfg["progressive"]:
            phase["steps"] = max(1, round(phase["steps"] * self.scale))
        path = self.out / "configs" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cfg, indent=1))
        return path

    def train(self, name: str, init: str | None = None) -> None:
        cmd = [self.py, "-m", "ss4d.training", "--config", self.config(name), "--data", self.data,
               "--output", self.runs / name, "--no-progress"]
        if init:
            cmd += ["--init", init]
        self.run(f"train {name}", cmd)
        run = self.runs / name
        from ss4d.training.cond_encoder import trains_encoder

        if trains_encoder(json.loads((run / "config.json").read_text())["conditioning"]):
            self.encoder_run = run      # the encoder every later flow conditions on (frozen)
        records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
        losses = [r for r in records if "loss" in r]
        batch = [p["batch_size"] for p in json.loads((run / "config.json").read_text())["progressive"]]
        # the run's own compute time, also when it was resumed: the sum of its steps' times (no evaluation/saving)
        self.timings["seconds"][f"train {name}"] = round(sum(batch[r["phase"]] / r["samples_per_s"] for r in losses), 1)
        k = max(1, len(losses) // 10)
        first = sum(r["loss"] for r in losses[:k]) / k
        last = sum(r["loss"] for r in losses[-k:]) / k
        evals = [r["eval_loss"] for r in records if "eval_loss" in r]      # the fixed held-out batch
        self.timings.setdefault("losses", {})[name] = {
            "steps": len(losses), "first_tenth": round(first, 5), "last_tenth": round(last, 5),
            "eval_first": round(evals[0], 5) if evals else None, "eval_last": round(evals[-1], 5) if evals else None}
        self.timings_file.write_text(json.dumps(self.timings, indent=1))
        log(f"{name}: mean loss {first:.4f} (first tenth) -> {last:.4f} (last tenth)")

    def build(self, name: str, *extra, with_procedural: bool = True) -> None:
        """ss4d-build-dataset over every group of the asset list (one dataset; each group its clip selection),
        then over the procedural set with its ``steps`` (only ``with_procedural``: not for
        the SLat latents, which it has no features for)."""
        calls = [(group["name"], [self.data_root / e["file"] for e in group["files"]],
                  ["--animations", group.get("animations", "all"),
                   "--max-clips-per-asset", str(group.get("max_clips", 0))]) for group in self.spec["groups"]]
        procedural = self.spec.get("procedural")
        if procedural and with_procedural:
            calls.append((procedural["name"], [self.procedural_folder()], ["--steps", ",".join(procedural["steps"])]))
        for group, files, selection in calls:
            step = f"build {name} ({group})"
            earlier = self.timings.get("seconds", {}).get(step)
            self.run(step, [self.py, "-m", "ss4d.data.build", *files, "-o", self.data, *BUILD_ARGS, *selection,
                            *extra])
            self.keep_time_if_nothing_built(step, earlier)

    def procedural_folder(self) -> Path:
        """OUT/procedural/<name>/: the list's procedural set written as GLB files (``write_figures`` leaves a file
        with the same bytes alone, so a rerun leaves the built dataset's inputs as they were)."""
        from ss4d.data.procedural import write_figures

        spec = self.spec["procedural"]
        folder = self.out / "procedural" / spec["name"]
        if folder not in self.procedural_written:          # once per run of the recipe, not once per build call
            write_figures(folder, int(spec["count"]), int(spec["seed"]), overwrite=True)   # OUT is the recipe's own
            self.procedural_written.add(folder)
        return folder

    def ss_latent_args(self) -> list:
        """The SS latent build's flags: the trained SS encoder, and ``--ss-mirror`` when a structure-flow config
        mirrors (``dataset.mirror``, which reads the SS latents of the mirrored voxels)."""
        mirror = any(float((json.loads((CONFIGS / f"{name}.json").read_text())["dataset"].get("mirror") or {})
                           .get("prob", 0)) > 0 for name in STRUCTURE_FLOW_CONFIGS)
        return ["--ss-encoder", self.out / "enc_ss" / "ckpts" / "ss_enc_conv3d"] + (["--ss-mirror"] if mirror else [])

    def keep_time_if_nothing_built(self, step: str, earlier: float | None) -> None:
        """A rerun of a finished build only finds its outputs done (the builder's summary lists no step run): the
        step keeps the time of the build that did the work instead of adding the check's."""
        try:
            ran = json.loads((self.data / BUILD_SUMMARY).read_text()).get("steps_run")
        except (OSError, ValueError):
            return
        if earlier is not None and ran == {}:
            self.timings["seconds"][step] = earlier
            self.timings_file.write_text(json.dumps(self.timings, indent=1))

    def export(self, name: str, runs: list, models_only: bool = False) -> Path:
        out = self.out / name
        marker = next(out.glob("ckpts/*.json"), out / "none") if models_only else out / "pipeline.json"
        if all(_newer(marker, self.runs / r / "log.jsonl") for r in runs):      # exported after the runs ended
            return out
        cmd = [self.py, "-m", "ss4d.training.export", "--output", out, "--steps", str(EXPORT_STEPS),
               "--ss-cfg", str(SS_CFG)]
        for r in runs:
            cmd += ["--run", self.runs / r]
        self.run(f"export {name}", cmd + (["--models-only"] if models_only else []), resumes=False)
        return out

    # ------------------------------------------------------------------ steps
    def check_assets(self) -> dict:
        """The asset list, every listed file (and sibling file) checked against its SHA-256."""
        try:
            spec = json.loads(self.data_list.read_text())
            entries = [e for g in spec["groups"] for e in g["files"]] + spec["heldout"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            sys.exit(f"[small-model] cannot read the asset list {self.data_list} ({e}); it needs \"groups\" "
                     f"[{{name, animations, max_clips, files}}] and \"heldout\" (see {DEFAULT_DEST / DATA_LIST})")
        self.check_procedural(spec.get("procedural"))
        for entry in entries + [s for e in entries for s in e.get("siblings", [])]:
            src = self.data_root / entry["file"]
            if not src.is_file():
                sys.exit(f"[small-model] {src} not found: the recipe needs the listed asset files under "
                         f"--data-root ({self.data_root}); scripts/data/collect_assets.py --clones DIR puts them "
                         f"there from clones of their repositories (see {self.dest / 'DATA.md'})")
            digest = hashlib.sha256(src.read_bytes()).hexdigest()
            if digest != entry["sha256"]:
                sys.exit(f"[small-model] {src}: SHA-256 {digest[:16]}… differs from the listed "
                         f"{entry['sha256'][:16]}…; the recipe only reproduces the listed files")
        return spec

    def check_procedural(self, spec: dict | None) -> None:
        """The list's optional ``procedural`` set: {name, generator, seed, count, steps} (see ``DEST/data.json``)."""
        from ss4d.data.build import STEPS

        if spec is None:
            return
        where = f"[small-model] {self.data_list}: \"procedural\""
        try:
            name, seed, count, steps = spec["name"], spec["seed"], spec["count"], spec["steps"]
        except (KeyError, TypeError):
            sys.exit(f"{where} needs name, generator, seed, count and steps (see {DEFAULT_DEST / DATA_LIST})")
        if spec.get("generator") != PROCEDURAL_GENERATOR:
            sys.exit(f"{where}: unknown generator {spec.get('generator')!r}; the recipe writes the figures of "
                     f"{PROCEDURAL_GENERATOR}")
        if not (isinstance(name, str) and name and isinstance(seed, int) and isinstance(count, int) and count > 0
                and isinstance(steps, list) and steps and set(steps) <= set(STEPS)):
            sys.exit(f"{where}: name must be a word, seed an integer, count a positive integer and steps a list of "
                     f"{', '.join(STEPS)}")

    def install(self, model: Path) -> None:
        """Copy the exported model's files into DEST (each atomically); DEST's other files stay."""
        from trellis_ext.atomic import atomic_file

        files = sorted(f for f in model.rglob("*") if f.is_file())
        for src in files:
            dst = self.dest / src.relative_to(model)
            if dst.is_file() and dst.read_bytes() == src.read_bytes():
                continue                                      # unchanged: keep it (and its time stamp)
            dst.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(str(dst), "wb") as f:
                f.write(src.read_bytes())
        log(f"installed {len(files)} files into {self.dest}")

    def link_folder(self, name: str, entries: list) -> Path:
        """OUT/assets/<name>/: links to the listed (self-contained) asset files, for ss4d-eval's --assets."""
        folder = self.out / "assets" / name
        folder.mkdir(parents=True, exist_ok=True)
        for entry in entries:
            link = folder / Path(entry["file"]).name
            if not link.is_symlink():
                link.symlink_to(self.data_root / entry["file"])
        return folder

    def evaluate(self, spec: dict) -> None:
        from ss4d.tiny import write_tiny_video_to_4d

        tiny = self.out / "tiny_random"
        if not (tiny / "pipeline.json").is_file():
            write_tiny_video_to_4d(str(tiny))
        models = {"small": self.dest, "per_frame_3d": self.out / "per_frame_3d", "random": tiny}
        owners = [e for g in spec["groups"] for e in g["files"] if e.get("heldout_clips")]
        clips = sorted({c for e in owners for c in e["heldout_clips"]})
        sets = {"heldout_clips": (self.link_folder("heldout_clips", owners), clips),
                "heldout_asset": (self.link_folder("heldout", spec["heldout"]), "first")}
        table = {}
        for set_name, (assets, animations) in sets.items():
            names = ",".join(animations) if isinstance(animations, list) else animations
            for model_name, folder in models.items():
                report = self.out / "eval" / f"{set_name}__{model_name}"
                if not _newer(report / "report.json", _newest_model_file(folder)):   # resumable: reports newer than the model stay
                    self.run(f"eval {set_name} {model_name}",
                             [self.py, "-m", "ss4d.evaluation.cli", "benchmark", "--assets", assets, "--model", folder,
                              "-o", report, "--animations", names, *EVAL_ARGS], resumes=False)
                table.setdefault(set_name, {})[model_name] = json.loads((report / "report.json").read_text())["overall"]
        from trellis_ext.atomic import atomic_file

        for set_name in sets:     # the small model's contact sheets: input frames, generated and true novel views
            sheet = self.out / "eval" / f"{set_name}__small" / "contact_sheet.png"
            with atomic_file(str(self.dest / f"contact_sheet_{set_name}.png"), "wb") as f:
                f.write(sheet.read_bytes())
        with atomic_file(str(self.dest / "eval.json"), "w") as f:
            json.dump({"settings": EVAL_ARGS, "overall": table}, f, indent=1)
        log(f"wrote {self.dest / 'eval.json'}")

    def demo_sheet(self) -> None:
        """DEST/demo_sheet.png: the demo clip (as make demo runs it) beside the model's novel view, 4 of 8 frames,
        above its 2x2 grid of views at the same frames."""
        import numpy as np
        from PIL import Image

        from trellis_ext.atomic import atomic_file

        out = self.out / "demo"
        self.run("demo", [self.py, "-m", "ss4d.cli", REPO / "assets" / "dancing_robot_fg.mp4", "--model", self.dest,
                          "-o", out, *DEMO_ARGS, "--render", "compare,grid", "--overwrite", "--no-progress"],
                 resumes=False)
        rows = []
        for kind in ("compare", "grid"):
            video = _read_video(out / "renders" / f"{kind}.mp4")
            rows.append(np.concatenate([video[i] for i in DEMO_SHEET_FRAMES], axis=1))
        width = max(r.shape[1] for r in rows)
        rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
        with atomic_file(str(self.dest / "demo_sheet.png"), "wb") as f:
            Image.fromarray(np.concatenate(rows, axis=0)).save(f, format="PNG", optimize=True)

    def card_tables(self) -> None:
        """Rewrite the results region of DEST/README.md (between RESULTS_BEGIN and RESULTS_END) from
        DEST/training.json and DEST/eval.json, so the model card always shows the installed model's numbers."""
        from trellis_ext.atomic import atomic_file

        card = self.dest / "README.md"
        if not card.is_file() or RESULTS_BEGIN not in card.read_text():
            return
        training = json.loads((self.dest / "training.json").read_text())
        hw = training["hardware"]
        lines = [RESULTS_BEGIN, "", "### Training", "",
                 f"On {hw['cpus']} CPU cores ({hw['machine']}, Python {hw['python']}, OMP threads {hw['threads']}); "
                 f"the whole recipe up to the install took {recipe_seconds(training['seconds']) / 60:.0f} minutes "
                 "of wall time (`training.json`: every step).", "",
                 "| run | models | phases: frames × steps (batch) | wall time | train loss, first → last tenth "
                 "| held-out eval loss, start → end |", "|---|---|---|---|---|---|"]
        for name, loss in training["losses"].items():
            cfg = json.loads((CONFIGS / f"{name}.json").read_text())
            models = json.loads((self.runs / name / "models.json").read_text())
            phases = ", ".join(f"{p['frames']} × {round(p['steps'] * self.scale)} ({p['batch_size']})"
                               for p in cfg["progressive"])
            secs = training["seconds"].get(f"train {name}", 0)
            evals = (f"{loss['eval_first']:.4f} → {loss['eval_last']:.4f}" if loss.get("eval_first") is not None
                     else "—")
            lines.append(f"| `{name}` | {', '.join(m['name'] for m in models.values())} | {phases} | "
                         f"{secs / 60:.1f} min | {loss['first_tenth']:.4f} → {loss['last_tenth']:.4f} | {evals} |")
        evaluation = self.dest / "eval.json"
        if evaluation.is_file():
            table = json.loads(evaluation.read_text())["overall"]
            clips = sorted(c for g in self.spec["groups"] for e in g["files"] for c in e.get("heldout_clips", []))
            titles = {"heldout_clips": f"Held-out clips of training assets ({', '.join(clips)})",
                      "heldout_asset": "Assets never trained on (" + ", ".join(
                          Path(e["file"]).stem for e in self.spec["heldout"]) + ")"}
            lines += ["", "### Evaluation", "", "`ss4d-eval benchmark " + " ".join(EVAL_ARGS) + "` (ground truth "
                      "rendered by the data toolkit from 4 orbit views no training view shares; white background).", ""]
            for set_name, models in table.items():
                lines += [f"**{titles[set_name]}**", "",
                          "| model | " + " | ".join(f"{m} {'↑' if up else '↓'}" for m, up in CARD_METRICS) + " |",
                          "|---|" + "---|" * len(CARD_METRICS)]
                for model_name, overall in models.items():
                    cells = [f"{overall[m]['value']:.4f}" if overall.get(m, {}).get("value") is not None else "—"
                             for m, _ in CARD_METRICS]
                    lines.append(f"| {MODEL_TITLES[model_name]} | " + " | ".join(cells) + " |")
                lines.append("")
        text = card.read_text()
        head, rest = text.split(RESULTS_BEGIN, 1)
        tail = rest.split(RESULTS_END, 1)[1] if RESULTS_END in rest else ""
        with atomic_file(str(card), "w") as f:
            f.write(head + "\n".join(lines).rstrip() + "\n\n" + RESULTS_END + tail)
        log(f"updated the results in {card}")

    def hardware(self) -> dict:
        return {"machine": platform.machine(), "cpus": os.cpu_count(), "threads": self.env["OMP_NUM_THREADS"],
                "python": platform.python_version()}

    def all(self, skip_eval: bool) -> None:
        spec = self.spec = self.check_assets()
        self.timings["hardware"] = self.hardware()
        self.build("features")
        self.train("ss_vae")
        self.export("enc_ss", ["ss_vae"], models_only=True)
        self.build("ss latents", *self.ss_latent_args())
        self.train("ss_flow_3d")
        self.train("ss_flow_4d", init=f"inflate:{self.runs / 'ss_flow_3d'}")
        self.train("slat_vae_3d")
        self.export("enc_slat_3d", ["slat_vae_3d"], models_only=True)
        self.build("slat latents 3d", "--slat-encoder", self.out / "enc_slat_3d" / "ckpts" / "slat_enc_3d",
                   with_procedural=False)
        self.train("slat_flow_3d")
        self.train("slat_vae_4d", init=f"inflate:{self.runs / 'slat_vae_3d'}")
        self.export("enc_slat_4d", ["slat_vae_4d"], models_only=True)
        self.build("slat latents 4d", "--slat-encoder", self.out / "enc_slat_4d" / "ckpts" / "slat_enc_4d",
                   with_procedural=False)
        self.train("slat_flow_4d", init=f"inflate:{self.runs / 'slat_flow_3d'}")
        model = self.export("model", ["ss_vae", "ss_flow_4d", "slat_vae_4d", "slat_flow_4d"])
        self.export("per_frame_3d", ["ss_vae", "ss_flow_3d", "slat_vae_3d", "slat_flow_3d"])
        self.install(model)
        from ss4d.reference_outputs import write_reference

        log(f"wrote {write_reference(self.dest)} (the outputs tests/test_small_model.py holds the folder to)")
        shutil.copyfile(self.timings_file, self.dest / "training.json")
        self.demo_sheet()
        if not skip_eval:
            self.evaluate(spec)
        self.card_tables()
        log(f"done: {self.dest} (timings and losses in {self.timings_file})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="work folder (dataset, runs, exports, evaluation)")
    ap.add_argument("--dest", default=str(DEFAULT_DEST), help="the model folder to install into")
    ap.add_argument("--data-list", default=None, help=f"the asset list (default: DEST/{DATA_LIST})")
    ap.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT), help="where the listed asset files are")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every phase's steps (e.g. 0.05: smoke run)")
    ap.add_argument("--skip-eval", action="store_true", help="stop after installing the weights")
    args = ap.parse_args()
    if not args.scale > 0:
        ap.error("--scale must be > 0")
    Recipe(args).all(args.skip_eval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
