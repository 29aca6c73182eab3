"""``make small-model`` (scripts/train/small_model.py): it only ever trains on the listed asset bytes, and its
configs are the paper's recipe in miniature (3D pretraining on single frames -> inflate -> progressive 4D)."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "train" / "small_model.py"
DATA_LIST = REPO / "checkpoints" / "ss4d-small" / "data.json"
WIDE_DATA_LIST = REPO / "checkpoints" / "ss4d-small" / "data_wide.json"   # a tried wider list (DATA.md, "More assets")
HUMANOID_DATA_LIST = REPO / "checkpoints" / "ss4d-small" / "data_humanoids.json"   # another (DATA.md, "Humanoids and robots")
TRIED_DATA_LISTS = [WIDE_DATA_LIST, HUMANOID_DATA_LIST]
DATA_ROOT = REPO.parent / "shared" / "data"
CONFIGS = REPO / "configs" / "train" / "small"


def load_script(path: Path):
    """A script of scripts/train as a module (they are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def listed(spec: dict) -> list:
    """Every file entry of an asset list (scripts/data/collect_assets.py's reading of it)."""
    return load_script(REPO / "scripts" / "data" / "collect_assets.py").listed_files(spec)


@pytest.mark.skipif(not DATA_ROOT.is_dir(), reason=f"shared data not found at {DATA_ROOT}")
@pytest.mark.parametrize("data_list", [DATA_LIST, *TRIED_DATA_LISTS], ids=lambda p: p.name)
def test_the_listed_assets_are_present_with_their_bytes(data_list):
    spec = json.loads(data_list.read_text())
    objects = {e["file"] for g in spec["groups"] for e in g["files"]} | {e["file"] for e in spec["heldout"]}
    assert len(objects) >= 20
    missing = sorted(e["file"] for e in listed(spec) if not (DATA_ROOT / e["file"]).is_file())
    if missing:
        pytest.skip(f"listed asset files not found under {DATA_ROOT}: {', '.join(missing[:3])}"
                    f"{' ...' if len(missing) > 3 else ''} (the recipe needs them; DATA.md says where they come from)")
    for e in listed(spec):
        assert hashlib.sha256((DATA_ROOT / e["file"]).read_bytes()).hexdigest() == e["sha256"], e["file"]
    train = {Path(e["file"]).name for g in spec["groups"] for e in g["files"]}
    assert not train & {Path(e["file"]).name for e in spec["heldout"]}          # the held-out asset never trains


@pytest.mark.parametrize("tried", TRIED_DATA_LISTS, ids=lambda p: p.name)
def test_a_tried_list_adds_objects_and_keeps_the_held_out_material(tried):
    """A tried list is data.json plus more training objects: its scores compare with the installed model's."""
    base, more = (json.loads(p.read_text()) for p in (DATA_LIST, tried))
    assert [g["name"] for g in more["groups"]] == [g["name"] for g in base["groups"]]
    added = []
    for b, m in zip(base["groups"], more["groups"]):
        assert {k: v for k, v in m.items() if k != "files"} == {k: v for k, v in b.items() if k != "files"}
        assert m["files"][:len(b["files"])] == b["files"]           # the installed list unchanged, the new objects after it
        added += m["files"][len(b["files"]):]
    assert added and not any(e.get("heldout_clips") for e in added)
    trained = {Path(e["file"]).stem for g in base["groups"] for e in g["files"]}
    assert not {Path(e["file"]).stem for e in added} & trained      # new objects, not new copies
    assert more["heldout"] == base["heldout"]


def test_other_bytes_stop_the_recipe_before_anything_is_written(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "a.glb").write_bytes(b"not the listed bytes")
    spec = {"groups": [{"name": "g", "files": [{"file": "a.glb", "sha256": "0" * 64}]}], "heldout": []}
    (tmp_path / "data.json").write_text(json.dumps(spec))
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--dest", str(tmp_path / "dest"),
                        "--data-list", str(tmp_path / "data.json"), "--data-root", str(tmp_path / "root")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "differs from the listed" in p.stderr and "a.glb" in p.stderr
    assert not out.exists() and not (tmp_path / "dest").exists()


def test_configs_are_3d_pretraining_then_inflated_progressive_4d():
    from ss4d.models.per_frame import PER_FRAME_CLASSES
    from ss4d.training.config import TrainConfig

    spec = json.loads(DATA_LIST.read_text())
    val = sorted(TrainConfig(json.loads((CONFIGS / "slat_flow_4d.json").read_text())).dataset["val_clips"])
    held = sorted(c for g in spec["groups"] for e in g["files"] for c in e.get("heldout_clips", []))
    assert sorted(v.split("-", 1)[1] for v in val) == held      # clip ids <asset>__<index>-<animation>
    for stage in ("ss_flow", "slat_vae", "slat_flow"):
        three_d = TrainConfig(json.loads((CONFIGS / f"{stage}_3d.json").read_text()))
        four_d = TrainConfig(json.loads((CONFIGS / f"{stage}_4d.json").read_text()))
        assert all(m["name"] in PER_FRAME_CLASSES for m in three_d.raw["models"].values())
        assert [p.frames for p in three_d.phases] == [1]
        assert four_d.raw["init"].startswith("inflate:") and four_d.raw["init"].endswith(f"{stage}_3d")
        frames = [p.frames for p in four_d.phases]
        assert frames == sorted(frames) and frames[0] > 1 and len(frames) > 1           # progressive
        assert three_d.dataset["val_clips"] == four_d.dataset["val_clips"] == TrainConfig(
            json.loads((CONFIGS / "slat_flow_4d.json").read_text())).dataset["val_clips"]


def test_a_missing_asset_list_is_one_line(tmp_path):
    p = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out"), "--data-list",
                        str(tmp_path / "none.json")], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "cannot read the asset list" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "out").exists()


def test_the_flows_condition_on_one_encoder_of_their_width():
    """Both flows (3D and 4D) are conditioned by the same encoder (the export stores one), and the 3D classes'
    cond_channels are that encoder's token width (the 4D runs inherit the inflated 3D models)."""
    from ss4d.conditioning.resolve import load_condition_encoder
    from ss4d.training.config import TrainConfig

    cfgs = {n: TrainConfig(json.loads((CONFIGS / f"{n}.json").read_text()))
            for n in ("ss_flow_3d", "ss_flow_4d", "slat_flow_3d", "slat_flow_4d")}
    encoders = {c.raw["conditioning"]["encoder"] for c in cfgs.values()}
    assert len(encoders) == 1, encoders
    width = load_condition_encoder(".", override=encoders.pop())[0].channels
    for name in ("ss_flow_3d", "slat_flow_3d"):
        assert cfgs[name].raw["models"]["denoiser"]["args"]["cond_channels"] == width, name


def test_every_flow_crops_its_conditioning_frames_around_the_whole_clip():
    """3D pretraining draws one-frame windows: cropped around the window (the default) the object would fill every
    image whatever its size in the clip-normalised grid; inference crops around the whole input clip."""
    from ss4d.training.config import TrainConfig

    for name in ("ss_flow_3d", "ss_flow_4d", "slat_flow_3d", "slat_flow_4d"):
        assert TrainConfig(json.loads((CONFIGS / f"{name}.json").read_text())).dataset.get("cond_crop") == "clip", name


def test_structure_iou_scores_silhouettes():
    """scripts/train/structure_iou.py's score: mean IoU of the three axis projections (a one-voxel shift of a thin
    shell keeps most of its silhouette, where the raw voxel IoU drops to 0)."""
    mod = load_script(SCRIPT.parent / "structure_iou.py")
    a = np.zeros((8, 8, 8), bool)
    a[2:6, 2:6, 3] = True                          # a 4x4 plate, one voxel thick (normal along z)
    b = np.roll(a, 1, axis=2)                      # the same plate one voxel further along z
    assert (a & b).sum() == 0
    # projections along x and y: 4x1 lines, disjoint; along z: the same 4x4 square
    assert mod.silhouette_iou(a, b) == pytest.approx((0 + 0 + 1) / 3)
    c = np.roll(a, 1, axis=0)                      # shifted in-plane: squares overlap 3/5 along z, lines 3/5 along y
    assert mod.silhouette_iou(a, c) == pytest.approx((1 + 3 / 5 + 3 / 5) / 3)
    assert mod.silhouette_iou(a, a) == 1.0


def test_a_retrain_that_changes_only_weights_makes_the_evaluation_stale(tmp_path):
    """The recipe keeps an evaluation report only while it is newer than the model's files. Seen before the fix: it
    compared with pipeline.json alone, which a retrain of one stage leaves byte-identical (and so untouched), and the
    new weights kept the old weights' report. The card and reports beside the model do not count."""
    import os

    mod = load_script(SCRIPT)
    model = tmp_path / "model"
    (model / "ckpts").mkdir(parents=True)
    files = {"pipeline.json": 100, "ckpts/ss_flow.safetensors": 100, "README.md": 100}
    report = tmp_path / "report.json"
    for name, t in list(files.items()) + [("../report.json", 200)]:
        (model / name).write_text("x")
        os.utime(model / name, (t, t))
    assert mod._newer(report, mod._newest_model_file(model))
    os.utime(model / "README.md", (300, 300))                            # the card rewritten: report still valid
    assert mod._newer(report, mod._newest_model_file(model))
    os.utime(model / "ckpts" / "ss_flow.safetensors", (300, 300))         # new weights: the report is stale
    assert not mod._newer(report, mod._newest_model_file(model))


def _recipe(mod, out: Path):
    import argparse

    return mod.Recipe(argparse.Namespace(out=str(out), dest=str(out / "dest"), data_root=str(out), data_list=None,
                                         scale=1.0))


def test_a_redone_step_replaces_its_time_and_a_resumed_one_adds_to_it(tmp_path):
    """timings.json: a training run or a dataset build resumes, so a rerun's time adds to the interrupted part's; an
    export, the demo or an evaluation starts over, so its time replaces the earlier one. Seen before the fix: a stale
    evaluation redone after a retrain (and every skipped rerun of one) added to the old time, so the card's figures
    grew with each rerun of the recipe (an evaluation booked at 373 s that took 104 s)."""
    mod = load_script(SCRIPT)
    recipe = _recipe(mod, tmp_path)
    recipe.timings = {"seconds": {"build features (shared)": 1000.0, "eval heldout_clips small": 1000.0}}
    noop = [sys.executable, "-c", "import time; time.sleep(0.2)"]      # longer than the 0.1 s the times are rounded to
    recipe.run("build features (shared)", noop)
    recipe.run("eval heldout_clips small", noop, resumes=False)
    seconds = json.loads((tmp_path / "timings.json").read_text())["seconds"]
    assert seconds["build features (shared)"] > 1000.0
    assert seconds["eval heldout_clips small"] < 1000.0


def test_the_thread_count_is_pinned_and_recorded_however_the_recipe_is_started(tmp_path, monkeypatch):
    """Floating-point sums depend on the thread count, so a bit-for-bit rerun needs the same one. ``make small-model``
    pins OMP_NUM_THREADS to the core count; the script started directly did not, and recorded "OMP threads None"
    (seen 2026-12-03). It now pins the same default for every step it starts and records what it pinned."""
    mod = load_script(SCRIPT)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert _recipe(mod, tmp_path).env["OMP_NUM_THREADS"] == str(os.cpu_count())
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    recipe = _recipe(mod, tmp_path)
    assert recipe.env["OMP_NUM_THREADS"] == "1" and recipe.hardware()["threads"] == "1"


def test_a_rerun_build_that_found_everything_done_keeps_the_time_of_the_work(tmp_path):
    """A dataset build resumes, but a rerun of a finished one only checks its outputs (its summary lists no step
    run): it keeps the earlier time. Seen before the fix: every rerun of the recipe added its check (3-5 s per
    build call) to the data builds' times in training.json."""
    mod = load_script(SCRIPT)
    recipe = _recipe(mod, tmp_path)
    recipe.data.mkdir(parents=True)
    recipe.timings = {"seconds": {"build features (shared)": 1000.0, "build features (extra)": 500.0}}
    for step, ran in (("build features (shared)", {}), ("build features (extra)", {"features": 3})):
        recipe.timings["seconds"][step] += 4.0                     # what run() booked for the rerun
        (recipe.data / mod.BUILD_SUMMARY).write_text(json.dumps({"steps_run": ran, "steps_skipped": {"mesh": 3}}))
        recipe.keep_time_if_nothing_built(step, {"build features (shared)": 1000.0,
                                                 "build features (extra)": 500.0}[step])
    assert recipe.timings["seconds"] == {"build features (shared)": 1000.0, "build features (extra)": 504.0}
    assert json.loads((tmp_path / "timings.json").read_text())["seconds"]["build features (shared)"] == 1000.0


def test_the_card_counts_the_recipe_up_to_the_install_only():
    """"the whole recipe up to the install took N minutes": training, builds and exports, not the demo or the
    evaluations that run after the install (training.json keeps their times too)."""
    mod = load_script(SCRIPT)
    seconds = {"build features (shared)": 60.0, "train ss_vae": 120.0, "export model": 30.0, "demo": 40.0,
               "eval heldout_clips small": 100.0, "eval heldout_asset random": 10.0}
    assert mod.recipe_seconds(seconds) == 210.0


@pytest.mark.parametrize("data_list", [DATA_LIST, *TRIED_DATA_LISTS], ids=lambda p: p.name)
def test_every_listed_file_names_its_source(data_list):
    mod = load_script(REPO / "scripts" / "data" / "collect_assets.py")
    spec = json.loads(data_list.read_text())
    for entry in mod.listed_files(spec):
        repo, commit, path = mod.parse_source(entry["source"])
        assert len(commit) == 40 and path, entry["file"]


def test_collect_assets_writes_missing_files_from_a_clone_and_never_replaces_other_bytes(tmp_path, capsys):
    """scripts/data/collect_assets.py: a missing file is read from the clone at the listed commit and written after
    its SHA-256 matched; a present file with other bytes stays as it is; a source that is not in the clone, or has
    other bytes, is reported and nothing is written for it."""
    import shutil

    if shutil.which("git") is None:
        pytest.skip("git not found")
    mod = load_script(REPO / "scripts" / "data" / "collect_assets.py")
    clone = tmp_path / "clones" / "own+rep"
    clone.mkdir(parents=True)
    git = ["git", "-C", str(clone), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], check=True)
    (clone / "a.bin").write_bytes(b"asset a")
    (clone / "c.bin").write_bytes(b"asset c")
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "x"], check=True)
    commit = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (clone / "a.bin").write_bytes(b"changed after the commit")          # the commit's bytes count, not the tree's

    def sha(b):
        return hashlib.sha256(b).hexdigest()

    def entry(file, content, path):
        return {"file": file, "sha256": sha(content), "source": f"own/rep@{commit}:{path}"}

    spec = {"groups": [{"name": "g", "files": [entry("x/a.bin", b"asset a", "a.bin"),
                                               entry("c.bin", b"asset c", "c.bin"),
                                               entry("wrong.bin", b"other bytes", "a.bin")]}],
            "heldout": [entry("gone.bin", b"gone", "gone.bin")]}
    (tmp_path / "data.json").write_text(json.dumps(spec))
    root = tmp_path / "root"
    root.mkdir()
    (root / "c.bin").write_bytes(b"a user's own file")
    code = mod.main(["--clones", str(tmp_path / "clones"), "--data-list", str(tmp_path / "data.json"),
                     "--data-root", str(root)])
    err = capsys.readouterr().err
    assert code == 1
    assert (root / "x" / "a.bin").read_bytes() == b"asset a"
    assert (root / "c.bin").read_bytes() == b"a user's own file" and "c.bin is there with other bytes" in err
    assert not (root / "wrong.bin").exists() and "wrong.bin: own/rep" in err and "other bytes" in err
    assert not (root / "gone.bin").exists() and "gone.bin" in err
    assert sorted(p.name for p in root.rglob("*")) == ["a.bin", "c.bin", "x"]   # no temporary file left behind


def test_the_ss_latent_build_writes_the_mirrored_set_exactly_when_a_structure_flow_reads_it(tmp_path, monkeypatch):
    """A structure-flow config with ``dataset.mirror`` reads the SS latents of the mirrored voxels, which only
    ``--ss-mirror`` writes; the recipe asks for them when (and only when) one of its configs mirrors."""
    mod = load_script(SCRIPT)
    readers = sorted(p.stem for p in CONFIGS.glob("*.json") if "ss_encoder" in json.loads(p.read_text())["dataset"])
    assert readers == sorted(mod.STRUCTURE_FLOW_CONFIGS)                  # no config that reads SS latents is missed
    shipped = any((json.loads((CONFIGS / f"{n}.json").read_text())["dataset"].get("mirror") or {}).get("prob", 0) > 0
                  for n in readers)
    assert ("--ss-mirror" in _recipe(mod, tmp_path).ss_latent_args()) == shipped
    for mirrored in ((), ("ss_flow_4d",)):
        folder = tmp_path / f"configs{len(mirrored)}"
        folder.mkdir()
        for n in readers:
            raw = json.loads((CONFIGS / f"{n}.json").read_text())
            raw["dataset"]["mirror"] = {"prob": 0.5 if n in mirrored else 0.0}
            (folder / f"{n}.json").write_text(json.dumps(raw))
        monkeypatch.setattr(mod, "CONFIGS", folder)
        assert ("--ss-mirror" in _recipe(mod, tmp_path).ss_latent_args()) == bool(mirrored)


def test_after_the_run_that_trained_the_encoder_every_flow_conditions_on_it(tmp_path):
    """Once a run has trained the condition encoder, the recipe's later flow configs name it (``run:<dir>``), so the
    exported folder's one encoder is the one every flow trained with; the VAE configs stay as written."""
    mod = load_script(SCRIPT)
    recipe = _recipe(mod, tmp_path)
    written = json.loads((CONFIGS / "ss_flow_4d.json").read_text())["conditioning"]["encoder"]
    assert json.loads(recipe.config("ss_flow_4d").read_text())["conditioning"]["encoder"] == written
    recipe.encoder_run = tmp_path / "runs" / "ss_flow_3d"
    for name in ("ss_flow_4d", "slat_flow_3d", "slat_flow_4d"):
        assert json.loads(recipe.config(name).read_text())["conditioning"]["encoder"] == f"run:{recipe.encoder_run}"
    for name in ("ss_vae", "slat_vae_3d"):
        assert json.loads(recipe.config(name).read_text()) == json.loads((CONFIGS / f"{name}.json").read_text())


def test_the_procedural_set_is_built_for_the_structure_stages_only(tmp_path):
    """The list's ``procedural`` figures join every build call with the list's ``steps`` (meshes, voxels,
    conditioning video, SS latents), and the SLat latent builds leave them out (they have no features)."""
    mod = load_script(SCRIPT)
    spec = json.loads(DATA_LIST.read_text())
    assert set(spec["procedural"]["steps"]) == {"mesh", "voxelize", "cond", "ss_latent"}
    recipe = _recipe(mod, tmp_path)
    recipe.spec = {"groups": [{"name": "shared", "files": [{"file": "a.glb"}]}],
                   "procedural": dict(spec["procedural"], count=2)}
    calls = []
    recipe.run = lambda name, cmd, resumes=True: calls.append((name, [str(c) for c in cmd]))
    recipe.build("features")
    recipe.build("slat latents 3d", "--slat-encoder", "ENC", with_procedural=False)
    names = [n for n, _ in calls]
    assert names == ["build features (shared)", "build features (figures)", "build slat latents 3d (shared)"]
    figures = calls[1][1]
    assert figures[figures.index("--steps") + 1] == ",".join(spec["procedural"]["steps"])
    folder = tmp_path / "procedural" / "figures"
    assert str(folder) in figures and sorted(p.name for p in folder.iterdir()) == ["figure_0_0000.glb",
                                                                                 "figure_0_0001.glb"]
    assert "--steps" not in calls[0][1]                                  # the listed assets: every step
    stamp = (folder / "figure_0_0000.glb").stat().st_mtime_ns
    rerun = _recipe(mod, tmp_path)
    rerun.spec = recipe.spec
    rerun.procedural_folder()                                            # a rerun rewrites nothing
    assert (folder / "figure_0_0000.glb").stat().st_mtime_ns == stamp


def test_a_figure_built_with_the_listed_steps_is_seen_by_the_structure_stages_only(tmp_path):
    """A figure built with the list's steps (here without the SS latent, which needs a trained encoder) is an ok
    clip with voxels and a conditioning video and no features: a stage that needs features or SLat latents skips
    it."""
    from ss4d.data.build import main as build
    from ss4d.data.layout import open_dataset
    from ss4d.data.procedural import random_figure, write_figure_glb
    from ss4d.training.data import ClipIndex

    write_figure_glb(random_figure(0, 0), tmp_path / "assets" / "figure.glb")
    steps = [s for s in json.loads(DATA_LIST.read_text())["procedural"]["steps"] if s != "ss_latent"]
    assert build([str(tmp_path / "assets"), "-o", str(tmp_path / "data"), "--frames", "2", "--resolution", "32",
                  "--voxel-resolution", "16", "--renderer", "torch", "--no-progress", "--steps", ",".join(steps)]) == 0
    reader = open_dataset(tmp_path / "data")
    (record,) = reader.clip_records()
    assert record["status"] == "ok" and not record.get("features") and record.get("cond_rendered")
    assert len(list((tmp_path / "data" / "clips" / record["clip_id"] / "cond").glob("*.png"))) == 2
    assert ClipIndex(reader, {}, 8, [1]).clips[0].clip_id == record["clip_id"]        # the SS VAE's view
    with pytest.raises(Exception, match="no features set"):
        ClipIndex(reader, {"features": "dinov2_tiny_random_visible"}, 8, [1])


@pytest.mark.parametrize("change,message", [
    ({"generator": "somewhere.else"}, "unknown generator 'somewhere.else'"),
    ({"count": 0}, "count a positive integer"),
    ({"steps": ["mesh", "paint"]}, "steps a list of"),
    ({"name": None}, "name must be a word"),
    ({"seed": None, "delete": "seed"}, "needs name, generator, seed, count and steps"),
], ids=["generator", "count", "steps", "name", "missing"])
def test_a_bad_procedural_set_stops_the_recipe_with_one_line(tmp_path, change, message):
    spec = json.loads(DATA_LIST.read_text())
    spec["procedural"].update({k: v for k, v in change.items() if k != "delete"})
    spec["procedural"].pop(change.get("delete", ""), None)
    (tmp_path / "list.json").write_text(json.dumps(spec))
    out = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out"), "--dest", str(tmp_path / "d"),
                          "--data-list", str(tmp_path / "list.json")], capture_output=True, text=True)
    assert out.returncode != 0 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr and not (tmp_path / "out").exists()
