"""Shared helpers and fixtures of the data-toolkit tests (imported explicitly by the test modules;
not a conftest.py, so that `from conftest import ...` in tests/ keeps resolving to tests/conftest.py)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ASSETS = Path(os.environ.get("SS4D_ASSETS", str(REPO.parent / "shared" / "data" / "assets"))).resolve()
ASSET_FILES = ("AnimatedMorphCube.glb", "CesiumMan.glb", "Fox.glb", "MorphStressTest.gltf", "QuaterniusRobot.glb",
               "RiggedFigure.glb")
SKINNED = ("CesiumMan", "Fox", "QuaterniusRobot", "RiggedFigure")
MORPHING = ("AnimatedMorphCube", "MorphStressTest")

# the tiny CI configuration of the full build (the example is 8 frames, 8 views, 128^2)
SMALL = dict(frames=6, views=6, resolution=128, fps=24.0)


def assets_dir() -> Path:
    if not all((ASSETS / f).is_file() for f in ASSET_FILES):
        pytest.skip(f"shared assets not found at {ASSETS} (expected ../shared/data/assets or $SS4D_ASSETS)")
    return ASSETS


@pytest.fixture(scope="session")
def assets() -> Path:
    return assets_dir()


def small_config(output: Path, **over):
    from ss4d.data.build import BuildConfig
    from ss4d.data.render import RenderSettings

    s = dict(SMALL, **{k: over.pop(k) for k in list(over) if k in SMALL})
    render = RenderSettings(num_views=s["views"], resolution=s["resolution"], cond_resolution=s["resolution"],
                            ssaa=1, samples=8, cond_video=False)
    kw = dict(output=output, frames=s["frames"], fps=s["fps"], render=render, renderer="torch",
              feature_model="tiny-random", aggregation="visible", device="cpu", progress=False)
    kw.update(over)
    return BuildConfig(**kw)


@pytest.fixture(scope="session")
def built_dataset(tmp_path_factory, assets):
    """All six assets through mesh/voxelize/render/cond/features (visible), then features (mean)."""
    from ss4d.data.build import DatasetBuilder
    from ss4d.data.rasterize import cpu_threads

    out = tmp_path_factory.mktemp("ds") / "dataset"
    with cpu_threads(1):  # small ops: threads only add hand-off cost on the 2-core CI machine
        first = DatasetBuilder(small_config(out)).run([str(assets)])
        mean = DatasetBuilder(small_config(out, aggregation="mean")).run([str(assets)])
    return {"out": out, "summary": first, "summary_mean": mean}


@pytest.fixture
def asset_copy(tmp_path, assets):
    """A writable folder with copies of two small assets (for corruption / resume tests)."""
    d = tmp_path / "assets"
    d.mkdir()
    for name in ("AnimatedMorphCube.glb", "RiggedFigure.glb"):
        shutil.copy(assets / name, d / name)
    return d


# ------------------------------------------------------------------------------------ every step, two assets
FULL_ASSETS = ("CesiumMan.glb", "RiggedFigure.glb")


def tiny_encoders(folder: Path) -> dict:
    """Random tiny SS and 4D SLat encoder checkpoints (seeded): the builder's ss_encoder / slat_encoder."""
    import torch

    import ss4d.models  # noqa: F401  (registers the 4D classes)
    from ss4d.models.slat_vae_4d import SLatEncoder4D
    from trellis_ext.models import get_model_class, save_pretrained

    torch.manual_seed(0)
    ss = get_model_class("SparseStructureEncoder")(in_channels=1, latent_channels=8, num_res_blocks=1,
                                                   channels=[4, 8, 8], num_res_blocks_middle=1)
    save_pretrained(ss, str(folder / "ss_enc_tiny"))
    save_pretrained(SLatEncoder4D(resolution=64, in_channels=32, model_channels=32, latent_channels=8,
                                  num_blocks=1, num_head_channels=16), str(folder / "slat_enc4d_tiny"))
    return {"ss_encoder": str(folder / "ss_enc_tiny"), "slat_encoder": str(folder / "slat_enc4d_tiny")}


def full_config(output: Path, encoders: dict, **over):
    """Every step (features, SS and SLat latents) at the smallest size, one torch thread."""
    return small_config(output, frames=2, views=2, threads=1, **encoders, **over)


@pytest.fixture(scope="session")
def full_inputs(tmp_path_factory, assets):
    d = tmp_path_factory.mktemp("full_in")
    for name in FULL_ASSETS:
        shutil.copy(assets / name, d / name)
    return {"assets": d, "encoders": tiny_encoders(d)}


@pytest.fixture(scope="session")
def full_dataset(tmp_path_factory, full_inputs):
    """Two shared assets through every step in this process (the reference for Ray and shards)."""
    from ss4d.data.build import DatasetBuilder
    from ss4d.data.rasterize import cpu_threads

    out = tmp_path_factory.mktemp("full") / "dataset"
    with cpu_threads(1):
        s = DatasetBuilder(full_config(out, full_inputs["encoders"])).run([str(full_inputs["assets"])])
    assert not s.failures and s.clips_ok == len(FULL_ASSETS), s.failures
    return out


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped, counts as gone). Linux /proc."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state


def children_running(parent: int, needle: str) -> list[int]:
    """Pids of the processes whose parent is ``parent`` and whose command line contains ``needle``."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and needle in cmd:
            found.append(int(d.name))
    return found
