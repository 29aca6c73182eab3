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
