"""Shared helpers and fixtures of the training tests (imported explicitly by the test modules).

``tiny_dataset``: a small dataset built once per session with the data toolkit (three animated assets, the
big morph cube flagged over the voxel budget so two clips are usable,
6 frames, 3 views at 64², a 32³ voxel grid, torch renderer, tiny random DINOv2 features, SS latents (also of the mirrored voxels) and SLat latents from
tiny random encoders), so every training test reads real builder output through ``FolderDataset``.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "data"))
from data_testkit import assets_dir, small_config  # noqa: E402

CONFIGS = REPO / "configs" / "train"
ASSETS = ("RiggedFigure.glb", "CesiumMan.glb", "AnimatedMorphCube.glb")
VOXEL_RES = 32      # the tiny configs' grid (SS latents 8³, SLat grid 32³): every stage fast on a CPU
MAX_VOXELS = 3000   # flags the big morph cube (~6k voxels per frame at 32³): keeps the sparse stages small
FRAMES, VIEWS, RES = 6, 3, 64
SS_ENCODER, SLAT_ENCODER = "ss_enc_tiny", "slat_enc_4d"
FEATURE_SET = "dinov2_tiny_random_visible"
LATENT_SET = f"{FEATURE_SET}__{SLAT_ENCODER}"


def build_tiny_dataset(root: Path) -> Path:
    import torch

    import ss4d.models  # noqa: F401
    from ss4d.data.build import DatasetBuilder
    from ss4d.data.rasterize import cpu_threads
    from trellis_ext.models import build_model, save_pretrained

    src = assets_dir()
    assets = root / "assets"
    assets.mkdir(parents=True)
    for a in ASSETS:
        shutil.copy(src / a, assets / a)
    enc_dir = root / "encoders"
    torch.manual_seed(0)
    for stem, cfg in ((SS_ENCODER, "tiny_ss_vae"), (SLAT_ENCODER, "tiny_slat_vae")):
        spec = json.loads((CONFIGS / f"{cfg}.json").read_text())["models"]["encoder"]
        save_pretrained(build_model(spec), str(enc_dir / stem))
    out = root / "dataset"
    with cpu_threads(1):
        s = DatasetBuilder(small_config(out, frames=FRAMES, views=VIEWS, resolution=RES,
                                        ss_encoder=str(enc_dir / SS_ENCODER), ss_mirror=True,
                                        slat_encoder=str(enc_dir / SLAT_ENCODER),
                                        max_voxels=MAX_VOXELS, voxel_resolution=VOXEL_RES)).run([str(assets)])
    assert not s.failures, s.failures
    return out


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return build_tiny_dataset(tmp_path_factory.mktemp("train") / "tiny")


def tiny_config(stage: str, phases=None, **trainer) -> dict:
    """The shipped tiny config of ``stage`` with ``phases`` / trainer overrides (a dict for TrainConfig)."""
    raw = json.loads((CONFIGS / f"tiny_{stage}.json").read_text())
    raw = copy.deepcopy(raw)
    if phases is not None:
        raw["progressive"] = phases
    raw["trainer"].update(trainer)
    return raw


def write_config(path: Path, raw: dict) -> Path:
    path.write_text(json.dumps(raw, indent=1))
    return path


def read_log(run: Path) -> list:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]


def step_losses(run: Path) -> dict:
    return {r["step"]: r["loss"] for r in read_log(run) if "loss" in r}


def run_cli(args, env=None, timeout=300) -> subprocess.CompletedProcess:
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0", **(env or {}))
    return subprocess.run([sys.executable, "-m", "ss4d.training", *map(str, args)], capture_output=True, text=True,
                          env=e, timeout=timeout, cwd=str(REPO))
