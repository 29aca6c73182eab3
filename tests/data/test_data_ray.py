"""``--executor ray`` on a local Ray cluster started here: exactly the files of the single-process build."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from data_testkit import FULL_ASSETS, assets, full_config, full_dataset, full_inputs  # noqa: F401 (fixtures)

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]'; `make test` installs it)")

VOLATILE = {"step.json", ".lock"}  # timings / lock files; step.json params and hashes are compared below


@pytest.fixture(scope="session")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


def test_ray_build_equals_the_plain_build(ray_cluster, full_inputs, full_dataset, tmp_path):
    from ss4d.data.build import DatasetBuilder

    out = tmp_path / "ray"
    s = DatasetBuilder(full_config(out, full_inputs["encoders"], executor="ray")).run([str(full_inputs["assets"])])
    assert not s.failures and s.clips_total == s.clips_ok == len(FULL_ASSETS)
    assert s.steps_run == {k: len(FULL_ASSETS) for k in
                           ("mesh", "voxelize", "render", "cond", "features", "ss_latent", "latent")}
    ref, got = files(full_dataset), files(out)
    clip_files = lambda d: {k for k in d if k.startswith("clips/") and Path(k).name not in VOLATILE}  # noqa: E731
    assert clip_files(got) == clip_files(ref) and len(clip_files(ref)) > 40
    for k in sorted(clip_files(ref)):
        if k.endswith("clip.json"):  # written by two stages: same content, other key order
            assert json.loads(got[k].read_text()) == json.loads(ref[k].read_text()), k
        else:
            assert got[k].read_bytes() == ref[k].read_bytes(), k
    for k in (k for k in ref if Path(k).name == "step.json"):
        a, b = json.loads(ref[k].read_text()), json.loads(got[k].read_text())
        assert (a["params"], a["hash"]) == (b["params"], b["hash"]), k
    for k in ("metadata.csv", "frames.csv") + tuple(k for k in ref if k.startswith("latent_stats/")):
        assert got[k].read_bytes() == ref[k].read_bytes(), k
    # a second Ray run finds everything done
    s = DatasetBuilder(full_config(out, full_inputs["encoders"], executor="ray")).run([str(full_inputs["assets"])])
    assert s.steps_run == {} and s.clips_ok == len(FULL_ASSETS)
