"""glTF loading and animation: synthetic assets with known answers, plus the six shared assets."""
from __future__ import annotations

import base64
import json
import math
import struct

import numpy as np
import pytest
from data_testkit import ASSET_FILES, MORPHING, SKINNED, assets  # noqa: F401  (fixture)

from ss4d.data.animation import quat_slerp, quat_to_matrix, sample_keyframes, trs_to_matrix
from ss4d.data.gltf import GLTFError, load_gltf
from ss4d.data.gltf_animation import (GLTFAnimator, list_clips, load_animated_mesh, sample_times)
from ss4d.data.mesh import Y_UP_TO_Z_UP, load_mesh_sequence, save_mesh_sequence

FLOAT, UBYTE, USHORT = 5126, 5121, 5123


class GLTFBuilder:
    """Packs numpy arrays into one buffer and writes .gltf (data URI / external .bin) or .glb."""

    def __init__(self):
        self.bin = bytearray()
        self.doc = {"asset": {"version": "2.0"}, "bufferViews": [], "accessors": [], "buffers": []}

    def view(self, data: bytes, stride: int | None = None) -> int:
        while len(self.bin) % 4:
            self.bin.append(0)
        v = {"buffer": 0, "byteOffset": len(self.bin), "byteLength": len(data)}
        if stride:
            v["byteStride"] = stride
        self.bin += data
        self.doc["bufferViews"].append(v)
        return len(self.doc["bufferViews"]) - 1

    def accessor(self, arr, ctype: int, atype: str, normalized: bool = False, view: int | None = None,
                 offset: int = 0, count: int | None = None, minmax: bool = False) -> int:
        arr = np.asarray(arr)
        acc = {"componentType": ctype, "type": atype, "count": int(count if count is not None else len(arr))}
        if view is None:
            view = self.view(arr.tobytes())
        acc["bufferView"] = view
        if offset:
            acc["byteOffset"] = offset
        if normalized:
            acc["normalized"] = True
        if minmax:
            acc["min"], acc["max"] = [float(arr.min())], [float(arr.max())]
        self.doc["accessors"].append(acc)
        return len(self.doc["accessors"]) - 1

    def write(self, path, kind: str = "datauri"):
        doc = json.loads(json.dumps(self.doc))
        if kind == "datauri":
            doc["buffers"] = [{"byteLength": len(self.bin), "uri": "data:application/octet-stream;base64,"
                               + base64.b64encode(bytes(self.bin)).decode()}]
            path.write_text(json.dumps(doc))
        elif kind == "external":
            (path.parent / "buffer.bin").write_bytes(bytes(self.bin))
            doc["buffers"] = [{"byteLength": len(self.bin), "uri": "buffer.bin"}]
            path.write_text(json.dumps(doc))
        elif kind == "glb":
            doc["buffers"] = [{"byteLength": len(self.bin)}]
            js = json.dumps(doc).encode()
            js += b" " * (-len(js) % 4)
            bn = bytes(self.bin) + b"\0" * (-len(self.bin) % 4)
            total = 12 + 8 + len(js) + 8 + len(bn)
            path.write_bytes(struct.pack("<4sII", b"glTF", 2, total) + struct.pack("<II", len(js), 0x4E4F534A) + js
                             + struct.pack("<II", len(bn), 0x004E4942) + bn)
        return path


def rig_asset() -> GLTFBuilder:
    """Two-joint skin + one morph target + node animation with hand-computable results.

    Joint A (node 1) at the origin, joint B (node 2) at (0, 1, 0), child of A. Vertices: v0 on A,
    v1 = (0, 2, 0) on B, v2 = (1, 2, 0) half/half. Animation "bend": B rotates 0 -> 90 deg about +Z
    over t in [0, 1]; morph weight 0 -> 1 moves v0 by (0, 0, 1). Interleaved (strided) positions,
    normalised ubyte weights and a sparse morph target are used on purpose.
    """
    b = GLTFBuilder()
    pos = np.array([[0, 0, 0], [0, 2, 0], [1, 2, 0]], np.float32)
    normals = np.tile([0, 0, 1], (3, 1)).astype(np.float32)
    inter = np.concatenate([pos, normals], 1).astype(np.float32)  # stride 24
    v_inter = b.view(inter.tobytes(), stride=24)
    a_pos = b.accessor(pos, FLOAT, "VEC3", view=v_inter, count=3)
    a_nrm = b.accessor(normals, FLOAT, "VEC3", view=v_inter, offset=12, count=3)
    a_idx = b.accessor(np.array([0, 1, 2], np.uint16), USHORT, "SCALAR")
    a_j = b.accessor(np.array([[0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]], np.uint8), UBYTE, "VEC4")
    a_w = b.accessor(np.array([[255, 0, 0, 0], [255, 0, 0, 0], [128, 127, 0, 0]], np.uint8), UBYTE, "VEC4",
                     normalized=True)
    ibm = np.stack([np.eye(4), np.linalg.inv(trs_to_matrix([0, 1, 0], [0, 0, 0, 1], [1, 1, 1]))]).astype(np.float32)
    a_ibm = b.accessor(ibm.transpose(0, 2, 1).copy(), FLOAT, "MAT4")  # column-major storage
    # sparse morph target: only vertex 0 moves
    sp_idx = b.view(np.array([0], np.uint16).tobytes())
    sp_val = b.view(np.array([[0, 0, 1]], np.float32).tobytes())
    b.doc["accessors"].append({"componentType": FLOAT, "type": "VEC3", "count": 3,
                               "sparse": {"count": 1, "indices": {"bufferView": sp_idx, "componentType": USHORT},
                                          "values": {"bufferView": sp_val}}})
    a_tgt = len(b.doc["accessors"]) - 1
    times = np.array([0.0, 1.0], np.float32)
    a_t = b.accessor(times, FLOAT, "SCALAR", minmax=True)
    h = math.sqrt(0.5)
    a_rot = b.accessor(np.array([[0, 0, 0, 1], [0, 0, h, h]], np.float32), FLOAT, "VEC4")
    a_wts = b.accessor(np.array([0.0, 1.0], np.float32), FLOAT, "SCALAR")
    b.doc.update({
        "scene": 0, "scenes": [{"nodes": [0, 1]}],
        "nodes": [{"mesh": 0, "skin": 0}, {"children": [2]}, {"translation": [0, 1, 0]}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": a_pos, "NORMAL": a_nrm, "JOINTS_0": a_j,
                                                   "WEIGHTS_0": a_w}, "indices": a_idx,
                                    "targets": [{"POSITION": a_tgt}]}], "weights": [0.0]}],
        "skins": [{"joints": [1, 2], "inverseBindMatrices": a_ibm}],
        "animations": [{"name": "bend", "channels": [{"sampler": 0, "target": {"node": 2, "path": "rotation"}},
                                                     {"sampler": 1, "target": {"node": 0, "path": "weights"}}],
                        "samplers": [{"input": a_t, "output": a_rot}, {"input": a_t, "output": a_wts}]}],
    })
    return b


def expected_rig(t: float) -> np.ndarray:
    """Hand-derived Y-up positions of the rig at time t."""
    ang = math.pi / 2 * t
    c, s = math.cos(ang), math.sin(ang)

    def about_b(p):  # rotate about joint B at (0, 1, 0) around +Z
        x, y = p[0], p[1] - 1
        return np.array([c * x - s * y, s * x + c * y + 1, p[2]])

    w_b = 127 / 255  # normalised ubyte weights 128/255 and 127/255, renormalised (sum 1)
    w_a = 128 / 255
    v2 = w_a * np.array([1, 2, 0]) + w_b * about_b([1, 2, 0])
    return np.stack([np.array([0, 0, t]), about_b([0, 2, 0]), v2 / (w_a + w_b)])


@pytest.mark.parametrize("kind", ["datauri", "external", "glb"])
def test_rig_skinning_morph_and_containers(tmp_path, kind):
    path = rig_asset().write(tmp_path / ("rig.glb" if kind == "glb" else "rig.gltf"), kind)
    clips = list_clips(path)
    assert [(c.name, c.start, c.end) for c in clips] == [("bend", 0.0, 1.0)]
    times = np.array([0.0, 0.5, 1.0, 2.0])  # 2.0 is past the end: clamped
    seq = load_animated_mesh(path, 0, times, normalize=False)
    for k, t in enumerate([0.0, 0.5, 1.0, 1.0]):
        np.testing.assert_allclose(seq.vertices[k], expected_rig(t) @ Y_UP_TO_Z_UP.T, atol=1e-5)


def test_y_up_to_z_up_is_blender_convention():
    # glTF +Y (up) -> +Z, glTF +Z (front) -> -Y
    np.testing.assert_allclose(Y_UP_TO_Z_UP @ [0, 1, 0], [0, 0, 1])
    np.testing.assert_allclose(Y_UP_TO_Z_UP @ [0, 0, 1], [0, -1, 0])
    assert np.isclose(np.linalg.det(Y_UP_TO_Z_UP), 1.0)


def test_sampler_interpolations():
    kt = np.array([0.0, 1.0, 3.0])
    kv = np.array([[0.0], [10.0], [30.0]])
    q = np.array([-1.0, 0.5, 1.0, 2.0, 5.0])
    np.testing.assert_allclose(sample_keyframes(kt, kv, "LINEAR", q)[:, 0], [0, 5, 10, 20, 30])
    np.testing.assert_allclose(sample_keyframes(kt, kv, "STEP", q)[:, 0], [0, 0, 10, 10, 30])
    # cubic spline with zero tangents: smoothstep between keys
    cub = np.array([[0.0], [0.0], [0.0], [0.0], [10.0], [0.0], [0.0], [30.0], [0.0]])
    np.testing.assert_allclose(sample_keyframes(kt, cub, "CUBICSPLINE", np.array([0.5]))[:, 0], [5.0])
    # cubic spline with constant slope tangents reproduces a line
    slope = np.array([[10.0], [0.0], [10.0], [10.0], [10.0], [10.0], [10.0], [30.0], [10.0]])
    np.testing.assert_allclose(sample_keyframes(kt, slope, "CUBICSPLINE", np.array([0.25, 2.0]))[:, 0], [2.5, 20.0])


def test_quaternion_slerp_and_matrix():
    qz90 = np.array([0, 0, math.sin(math.pi / 4), math.cos(math.pi / 4)])
    ident = np.array([0, 0, 0, 1.0])
    half = quat_slerp(ident, qz90, np.array(0.5))
    np.testing.assert_allclose(quat_to_matrix(half) @ [1, 0, 0], [math.cos(math.pi / 4), math.sin(math.pi / 4), 0],
                               atol=1e-12)
    np.testing.assert_allclose(quat_slerp(ident, -qz90, np.array(1.0)), qz90, atol=1e-12)  # shortest path
    m = trs_to_matrix([1, 2, 3], qz90, [2, 2, 2])
    np.testing.assert_allclose(m @ [1, 0, 0, 1], [1, 4, 3, 1], atol=1e-12)


def test_strip_and_fan_faces():
    idx = np.arange(5)
    # glTF 2.0: strip triangle i = (v_i, v_{i+1+i%2}, v_{i+2-i%2})
    np.testing.assert_array_equal(GLTFAnimator._faces(5, idx), [[0, 1, 2], [1, 3, 2], [2, 3, 4]])
    np.testing.assert_array_equal(GLTFAnimator._faces(6, idx), [[0, 1, 2], [0, 2, 3], [0, 3, 4]])


def test_sample_times_modes():
    from ss4d.data.gltf_animation import ClipInfo

    clip = ClipInfo(0, "c", 1.0, 2.0)
    np.testing.assert_allclose(sample_times(clip, 4, 2.0, "clamp"), [1.0, 1.5, 2.0, 2.0])
    np.testing.assert_allclose(sample_times(clip, 4, 2.0, "loop"), [1.0, 1.5, 1.0, 1.5])
    np.testing.assert_allclose(sample_times(clip, 3, 99.0, "stretch"), [1.0, 1.5, 2.0])
    with pytest.raises(ValueError, match="num_frames"):
        sample_times(clip, 0, 24.0)


@pytest.mark.parametrize("name", ASSET_FILES)
def test_shared_assets_animate_inside_unit_cube(assets, name):
    clips = list_clips(assets / name)
    assert clips and clips[0].duration > 0
    times = sample_times(clips[0], 6, 24.0)
    seq = load_animated_mesh(assets / name, clips[0].index, times)
    v = seq.vertices
    assert v.shape[0] == 6 and len(seq.faces) > 0
    assert np.abs(v).max() <= 0.5 + 1e-5  # inside [-0.5, 0.5]^3 for every frame
    ext = v.max((0, 1)) - v.min((0, 1))
    assert np.isclose(ext.max(), 1.0, atol=1e-5)  # one clip-wide normalisation: largest side exactly 1
    np.testing.assert_allclose((v.max((0, 1)) + v.min((0, 1))) / 2, 0.0, atol=1e-5)
    stem = name.split(".")[0]
    if stem in SKINNED + MORPHING:
        assert np.abs(v - v[:1]).max() > 1e-3, "vertices should move over time"
    if stem in ("CesiumMan", "RiggedFigure"):  # upright humans: height is world Z after Y-up -> Z-up
        assert np.argmax(ext) == 2


def test_textures_and_materials_kept(assets):
    fox = load_animated_mesh(assets / "Fox.glb", 0, np.array([0.0]))
    assert fox.uv is not None and fox.materials[0].texture is not None
    assert fox.materials[0].texture.shape[2] == 4
    robot = load_animated_mesh(assets / "QuaterniusRobot.glb", 0, np.array([0.0]))
    assert robot.uv is None and len(robot.materials) == 3
    assert len(np.unique(robot.face_material)) == 3
    np.testing.assert_allclose(robot.materials[0].base_color_factor[:3], [0.7379, 0.3641, 0.0479], atol=1e-3)


def test_mesh_sequence_roundtrip(tmp_path, assets):
    seq = load_animated_mesh(assets / "MorphStressTest.gltf", 0, np.array([0.0, 0.5]))
    save_mesh_sequence(seq, tmp_path / "m")
    back = load_mesh_sequence(tmp_path / "m")
    np.testing.assert_array_equal(back.vertices, seq.vertices)
    np.testing.assert_array_equal(back.faces, seq.faces)
    np.testing.assert_array_equal(back.uv, seq.uv)
    assert [m.name for m in back.materials] == [m.name for m in seq.materials]
    np.testing.assert_array_equal(back.materials[0].texture, seq.materials[0].texture)
    assert back.normalization == seq.normalization


@pytest.mark.parametrize("corruption", ["truncated", "garbage", "bad_json", "missing_bin", "version1"])
def test_corrupt_files_raise_one_line_errors(tmp_path, assets, corruption):
    p = tmp_path / "bad.glb"
    raw = (assets / "RiggedFigure.glb").read_bytes()
    if corruption == "truncated":
        p.write_bytes(raw[: len(raw) // 2])
    elif corruption == "garbage":
        p.write_bytes(b"\x00\x01not a gltf at all" * 10)
    elif corruption == "bad_json":
        p = tmp_path / "bad.gltf"
        p.write_text('{"asset": {"version": "2.0"}, "nodes": [')
    elif corruption == "missing_bin":
        p = rig_asset().write(tmp_path / "rig.gltf", "external")
        (tmp_path / "buffer.bin").unlink()
    elif corruption == "version1":
        p = tmp_path / "old.gltf"
        p.write_text('{"asset": {"version": "1.0"}}')
    with pytest.raises(GLTFError) as err:
        load_gltf(p)
    assert "\n" not in str(err.value)
