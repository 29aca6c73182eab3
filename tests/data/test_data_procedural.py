"""Procedural articulated figures (ss4d.data.procedural): seeded, valid animated GLBs whose limbs stay
attached and move, read back by the data toolkit's own glTF loader."""
import numpy as np
import pytest

from ss4d.data.gltf_animation import GLTFAnimator, list_clips, sample_times
from ss4d.data.gltf import load_gltf
from ss4d.data import procedural
from ss4d.data.procedural import random_figure, write_figure_glb

pytest.importorskip("pygltflib")

BOX_FACES = 12       # triangles of one box
BOX_VERTICES = 24    # flat-shaded: 4 per side


def _world(path, times):
    doc = load_gltf(path)
    return doc, GLTFAnimator(doc).evaluate(0, times)


def _node(doc, name):
    return next(i for i, n in enumerate(doc.get("nodes")) if n.get("name") == name)


def test_same_seed_same_bytes_other_index_other_figure(tmp_path):
    a, b, c = (write_figure_glb(random_figure(seed, i), tmp_path / f"{seed}_{i}_{k}.glb")
               for k, (seed, i) in enumerate([(3, 5), (3, 5), (3, 6)]))
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_glb_reads_back_as_one_looping_clip_of_boxes(tmp_path):
    spec = random_figure(0, 1)
    path = write_figure_glb(spec, tmp_path / "fig.glb")
    clips = list_clips(path)
    assert [c.name for c in clips] == ["Move"]
    assert clips[0].duration == pytest.approx(procedural.ANIMATION_SECONDS)
    parts = [j for j in spec.joints if j.part is not None]
    doc, seq = _world(path, np.array([0.0, procedural.ANIMATION_SECONDS]))
    assert len(seq.faces) == BOX_FACES * len(parts)
    assert seq.vertices.shape[1] == BOX_VERTICES * len(parts)
    assert len(doc.get("materials")) == len(parts)
    np.testing.assert_allclose(seq.vertices[0], seq.vertices[1], atol=1e-5)      # a loop: last key = first


def test_boxes_are_closed_and_face_outwards(tmp_path):
    """Every triangle's winding normal points away from its box's centre (front faces counter-clockwise)."""
    pos, nrm, idx = procedural._box((0.3, 1.0, 0.2), (0.0, -0.5, 0.0))
    tri = pos[idx.reshape(-1, 3)]
    winding = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    outward = tri.mean(1) - np.array([0.0, -0.5, 0.0])
    assert (np.einsum("ij,ij->i", winding, outward) > 0).all()
    np.testing.assert_allclose(pos.min(0), [-0.15, -1.0, -0.1])
    np.testing.assert_allclose(pos.max(0), [0.15, 0.0, 0.1])
    # each vertex normal is its side's: parallel to the winding normal of the triangles using it
    per_tri = nrm[idx.reshape(-1, 3)][:, 0]
    np.testing.assert_allclose(per_tri, winding / np.linalg.norm(winding, axis=1, keepdims=True), atol=1e-6)


@pytest.mark.parametrize("index", range(6))
def test_limbs_stay_attached_and_move(tmp_path, index):
    """In world space, at every sampled time, each lower arm starts where its upper arm ends (the elbow) and each
    upper arm at the shoulder; the arms move over the clip; the figure stands on its feet (lowest point near 0)."""
    spec = random_figure(7, index)
    path = write_figure_glb(spec, tmp_path / "fig.glb")
    times = sample_times(list_clips(path)[0], 8, 24.0, "stretch")
    doc, _ = _world(path, times)
    world = GLTFAnimator(doc).world_matrices(0, times)          # [T, nodes, 4, 4]
    joints = {j.name: j for j in spec.joints}
    for side in "lr":
        upper, lower = _node(doc, f"upper_arm_{side}"), _node(doc, f"lower_arm_{side}")
        arm = joints[f"upper_arm_{side}"].part.size[1]
        elbow_from_upper = world[:, upper] @ np.array([0.0, -arm, 0.0, 1.0])
        elbow_from_lower = world[:, lower] @ np.array([0.0, 0.0, 0.0, 1.0])
        np.testing.assert_allclose(elbow_from_upper, elbow_from_lower, atol=1e-6)
        hand = world[:, lower] @ np.array([0.0, -joints[f"lower_arm_{side}"].part.size[1], 0.0, 1.0])
        assert np.ptp(hand[:, :3], axis=0).max() > 0.01        # the hand moves over the clip
    lowest = GLTFAnimator(doc).evaluate(0, times[:1]).vertices[0][:, 1].min()
    assert abs(lowest) < 0.5 * max(joints["foot_l"].part.size)


def test_figures_differ_in_proportions_and_pose():
    specs = [random_figure(0, i) for i in range(20)]
    heads = {round(s.joints[[j.name for j in s.joints].index("head")].part.size[0], 4) for s in specs}
    assert len(heads) == 20
    for lo_hi, name in ((procedural.HEAD_SIZE, "head"), (procedural.TORSO_HEIGHT, "torso")):
        sizes = [s.joints[[j.name for j in s.joints].index(name)].part.size[1] for s in specs]
        assert lo_hi[0] <= min(sizes) and max(sizes) <= lo_hi[1]


def test_write_figures_keeps_same_bytes_and_never_replaces_other_files(tmp_path):
    from ss4d.data.procedural import main, write_figures

    paths = write_figures(tmp_path, 3, seed=2)
    assert [p.name for p in paths] == [f"figure_2_{i:04d}.glb" for i in range(3)]
    stamp = paths[0].stat().st_mtime_ns
    assert write_figures(tmp_path, 3, seed=2) == paths and paths[0].stat().st_mtime_ns == stamp
    paths[1].write_bytes(b"a user's file")
    with pytest.raises(FileExistsError):
        write_figures(tmp_path, 4, seed=2)
    assert paths[1].read_bytes() == b"a user's file" and not (tmp_path / "figure_2_0003.glb").exists()
    assert main([str(tmp_path), "--count", "3", "--seed", "2"]) == 1          # the CLI: one line, nothing replaced
    assert paths[1].read_bytes() == b"a user's file"
    assert main([str(tmp_path), "--count", "3", "--seed", "2", "--overwrite"]) == 0
    assert paths[1].read_bytes() == write_figure_glb(random_figure(2, 1), tmp_path / "again" / "f.glb").read_bytes()


def test_the_cli_says_one_line_when_the_output_is_a_file(tmp_path, capsys):
    from ss4d.data.procedural import main

    (tmp_path / "taken").write_text("a user's file")
    assert main([str(tmp_path / "taken"), "--count", "1"]) == 1
    assert capsys.readouterr().err.startswith("error: ") and (tmp_path / "taken").read_text() == "a user's file"
