"""Procedural articulated figures: seeded, animated GLB files of box-built humanoids and robots.

The small model's asset list holds a few dozen hand-made objects; its structure flow fits them and
does not learn that the occupancy follows the input's silhouette. These figures add shapes of the
kind that matters for people and robots (a body with arms and legs in every pose) in any number,
with nothing to download and no licence beyond this repository's: every file is a pure function of
``(seed, index)``.

A figure is a scene graph of boxes (glTF nodes with TRS, one mesh per part, one untextured
material per part):

    root ─ pelvis ─ torso ─ neck ─ head
               │        ├─ shoulder_l ─ upper_arm_l ─ lower_arm_l
               │        └─ shoulder_r ─ upper_arm_r ─ lower_arm_r
               ├─ hip_l ─ upper_leg_l ─ lower_leg_l ─ foot_l
               └─ hip_r ─ upper_leg_r ─ lower_leg_r ─ foot_r

Proportions (head size, limb lengths and thicknesses, torso shape), colours and one animation
(``Move``: node rotations sampled as LINEAR keys, a loop of :data:`ANIMATION_SECONDS`) are drawn
from a ``numpy`` generator seeded with ``seed * SEED_STRIDE + index``. Units: metres, +Y up, the
figure faces +Z (the glTF convention, so the data toolkit's front camera sees its face).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import numpy as np

from trellis_ext.atomic import atomic_file

__all__ = ["FigureSpec", "random_figure", "figure_glb_bytes", "write_figure_glb", "write_figures", "GENERATOR"]

GENERATOR = "ss4d (ss4d.data.procedural)"
#: Seeds of different figures never collide for indices below this.
SEED_STRIDE = 1_000_003
#: Length of the one animation, and its number of keys (the last equals the first: a loop).
ANIMATION_SECONDS = 2.0
ANIMATION_KEYS = 17
#: glTF buffer views are aligned to 4 bytes.
ALIGN = 4

# Proportions, in metres (a figure is normalised by the data toolkit anyway); (low, high) of a uniform draw.
TORSO_HEIGHT = (0.45, 0.75)
TORSO_WIDTH = (0.30, 0.60)
TORSO_DEPTH = (0.18, 0.35)
HEAD_SIZE = (0.18, 0.45)          # edge of the head box (large: chibi figures and robots with big heads)
NECK_LENGTH = (0.0, 0.08)
ARM_LENGTH = (0.28, 0.45)         # each of the two arm segments
ARM_THICKNESS = (0.08, 0.18)
LEG_LENGTH = (0.28, 0.50)         # each of the two leg segments
LEG_THICKNESS = (0.10, 0.22)
FOOT_LENGTH = (0.12, 0.28)
PELVIS_HEIGHT = (0.08, 0.18)

# Joint motion: amplitudes in degrees, (low, high) of a uniform draw; rest angles likewise.
SHOULDER_RAISE_REST = (5.0, 100.0)    # sideways (about the forward axis); 90: arms held out
SHOULDER_RAISE_AMPLITUDE = (0.0, 80.0)
SHOULDER_SWING_AMPLITUDE = (0.0, 70.0)  # forward/back (about the sideways axis)
ELBOW_REST = (0.0, 60.0)
ELBOW_AMPLITUDE = (0.0, 60.0)
HIP_SWING_AMPLITUDE = (0.0, 45.0)
HIP_SPREAD_REST = (0.0, 25.0)
KNEE_AMPLITUDE = (0.0, 50.0)
TORSO_TWIST_AMPLITUDE = (0.0, 30.0)
#: Probability that one arm is raised high (a wave) rather than moving like the other.
WAVE_PROB = 0.35
WAVE_RAISE = (130.0, 170.0)
#: Probability that both sides move in phase (jumping-jack like) rather than in opposition (walk like).
SYMMETRIC_PROB = 0.4
#: The whole figure turned about +Y by up to this many degrees either way (0: facing the front camera).
YAW = 30.0


@dataclass
class Part:
    """One box of a figure: ``size`` (x, y, z) metres, ``offset`` of the box centre from its node's origin."""
    name: str
    size: Tuple[float, float, float]
    offset: Tuple[float, float, float]
    color: Tuple[float, float, float]


@dataclass
class Joint:
    """One node: its parent's index (-1 for the root), rest translation, and rotation keys ``[K, 4]`` (x, y, z, w)."""
    name: str
    parent: int
    translation: Tuple[float, float, float]
    rotations: np.ndarray
    part: Part | None = None


@dataclass
class FigureSpec:
    """A whole figure: its joints in topological order (parents first) and the key times ``[K]`` seconds."""
    name: str
    joints: List[Joint]
    times: np.ndarray


def _axis_angle(axis: str, degrees: np.ndarray) -> np.ndarray:
    """Quaternions ``[K, 4]`` (x, y, z, w) for rotations of ``degrees [K]`` about the unit axis ``"x" | "y" | "z"``."""
    half = np.radians(np.asarray(degrees, dtype=np.float64)) / 2
    q = np.zeros((half.size, 4))
    q[:, "xyz".index(axis)] = np.sin(half)
    q[:, 3] = np.cos(half)
    return q


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of quaternion arrays ``[K, 4]`` (x, y, z, w): the rotation ``b`` first, then ``a``."""
    ax, ay, az, aw = a.T
    bx, by, bz, bw = b.T
    return np.stack([aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw,
                     aw * bw - ax * bx - ay * by - az * bz], axis=1)


def random_figure(seed: int, index: int) -> FigureSpec:
    """The figure number ``index`` of the set drawn with ``seed`` (a pure function of both)."""
    rng = np.random.default_rng(seed * SEED_STRIDE + index)
    u = lambda lo_hi: float(rng.uniform(*lo_hi))  # noqa: E731
    phase_t = np.linspace(0.0, 2 * math.pi, ANIMATION_KEYS)   # one loop over the keys
    times = np.linspace(0.0, ANIMATION_SECONDS, ANIMATION_KEYS)

    def wave(amplitude: float, rest: float = 0.0, phase: float | None = None, cycles: int = 1) -> np.ndarray:
        p = rng.uniform(0, 2 * math.pi) if phase is None else phase
        return rest + amplitude * np.sin(cycles * phase_t + p)

    def color() -> Tuple[float, float, float]:
        return tuple(float(c) for c in rng.uniform(0.05, 1.0, 3))

    body_color, limb_color, head_color = color(), color(), color()
    th, tw, td = u(TORSO_HEIGHT), u(TORSO_WIDTH), u(TORSO_DEPTH)
    head = u(HEAD_SIZE)
    neck = u(NECK_LENGTH)
    arm, arm_t = u(ARM_LENGTH), u(ARM_THICKNESS)
    leg, leg_t = u(LEG_LENGTH), u(LEG_THICKNESS)
    foot = u(FOOT_LENGTH)
    pelvis_h = u(PELVIS_HEIGHT)
    hip_x = max(tw / 2 - leg_t / 2, leg_t / 2 + 0.01)

    cycles = int(rng.integers(1, 3))
    symmetric = rng.random() < SYMMETRIC_PROB
    wave_side = int(rng.integers(0, 2)) if rng.random() < WAVE_PROB else -1
    raise_rest, raise_amp = u(SHOULDER_RAISE_REST), u(SHOULDER_RAISE_AMPLITUDE)
    swing_amp, elbow_rest, elbow_amp = u(SHOULDER_SWING_AMPLITUDE), u(ELBOW_REST), u(ELBOW_AMPLITUDE)
    hip_amp, hip_spread, knee_amp = u(HIP_SWING_AMPLITUDE), u(HIP_SPREAD_REST), u(KNEE_AMPLITUDE)
    arm_phase, leg_phase = rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi)

    still = np.tile([0.0, 0.0, 0.0, 1.0], (ANIMATION_KEYS, 1))
    joints: List[Joint] = []

    def add(name, parent, translation, rotations=None, part=None) -> int:
        joints.append(Joint(name, parent, tuple(float(v) for v in translation),
                            still.copy() if rotations is None else rotations, part))
        return len(joints) - 1

    leg_height = 2 * leg + leg_t / 2
    root = add("root", -1, (0.0, 0.0, 0.0), _axis_angle("y", np.full(ANIMATION_KEYS, u((-YAW, YAW)))))
    pelvis = add("pelvis", root, (0.0, leg_height, 0.0),
                 _axis_angle("y", wave(u(TORSO_TWIST_AMPLITUDE) / 3, cycles=cycles)),
                 Part("pelvis", (tw, pelvis_h, td), (0.0, pelvis_h / 2, 0.0), body_color))
    torso = add("torso", pelvis, (0.0, pelvis_h, 0.0), _axis_angle("y", wave(u(TORSO_TWIST_AMPLITUDE), cycles=cycles)),
                Part("torso", (tw, th, td), (0.0, th / 2, 0.0), body_color))
    neck_j = add("neck", torso, (0.0, th, 0.0), _axis_angle("y", wave(u(TORSO_TWIST_AMPLITUDE), cycles=cycles)))
    add("head", neck_j, (0.0, neck, 0.0), None, Part("head", (head, head, head), (0.0, head / 2, 0.0), head_color))

    for side, sign in (("l", 1.0), ("r", -1.0)):
        i_side = 0 if side == "l" else 1
        opposite = 0.0 if symmetric else math.pi * i_side
        if i_side == wave_side:
            raise_deg = wave(raise_amp / 4, u(WAVE_RAISE), arm_phase, cycles)
            elbow_deg = wave(elbow_amp, elbow_rest, arm_phase + opposite, 2 * cycles)
            swing_deg = np.zeros(ANIMATION_KEYS)
        else:
            raise_deg = wave(raise_amp / 2, raise_rest, arm_phase + opposite, cycles)
            swing_deg = wave(swing_amp, 0.0, arm_phase + opposite + math.pi / 2, cycles)
            elbow_deg = wave(elbow_amp / 2, elbow_rest, arm_phase + opposite, cycles)
        # raising the left arm (+x) sideways is a rotation about +z by a positive angle, the right arm negative
        shoulder_rot = _quat_mul(_axis_angle("z", sign * raise_deg), _axis_angle("x", swing_deg))
        shoulder = add(f"shoulder_{side}", torso, (sign * (tw / 2 + arm_t / 2), th - arm_t / 2, 0.0), shoulder_rot)
        upper = add(f"upper_arm_{side}", shoulder, (0.0, 0.0, 0.0), None,
                    Part(f"upper_arm_{side}", (arm_t, arm, arm_t), (0.0, -arm / 2, 0.0), limb_color))
        add(f"lower_arm_{side}", upper, (0.0, -arm, 0.0), _axis_angle("x", -np.abs(elbow_deg)),
            Part(f"lower_arm_{side}", (arm_t * 0.9, arm, arm_t * 0.9), (0.0, -arm / 2, 0.0), limb_color))

        hip_rot = _quat_mul(_axis_angle("z", sign * wave(hip_spread / 3, hip_spread, leg_phase + opposite, cycles)),
                            _axis_angle("x", wave(hip_amp, 0.0, leg_phase + opposite, cycles)))
        hip = add(f"hip_{side}", pelvis, (sign * hip_x, 0.0, 0.0), hip_rot)
        upper_leg = add(f"upper_leg_{side}", hip, (0.0, 0.0, 0.0), None,
                        Part(f"upper_leg_{side}", (leg_t, leg, leg_t), (0.0, -leg / 2, 0.0), limb_color))
        knee = np.abs(wave(knee_amp, 0.0, leg_phase + opposite, cycles))
        lower_leg = add(f"lower_leg_{side}", upper_leg, (0.0, -leg, 0.0), _axis_angle("x", knee),
                        Part(f"lower_leg_{side}", (leg_t * 0.9, leg, leg_t * 0.9), (0.0, -leg / 2, 0.0), limb_color))
        add(f"foot_{side}", lower_leg, (0.0, -leg, 0.0), None,
            Part(f"foot_{side}", (leg_t, leg_t / 2, foot), (0.0, -leg_t / 4, foot / 2 - leg_t / 2), body_color))
    return FigureSpec(name=f"figure_{seed}_{index:04d}", joints=joints, times=times)


def _box(size: Tuple[float, float, float], offset: Tuple[float, float, float]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A box's flat-shaded triangles: positions ``[24, 3]``, normals ``[24, 3]`` float32, indices ``[36]`` uint16."""
    half = np.asarray(size, dtype=np.float32) / 2
    centre = np.asarray(offset, dtype=np.float32)
    positions, normals, indices = [], [], []
    for axis in range(3):
        for sign in (1.0, -1.0):
            n = np.zeros(3, np.float32)
            n[axis] = sign
            a, b = [(axis + 1) % 3, (axis + 2) % 3]
            corners = []
            for da, db in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                p = n * half
                p = p.copy()
                p[a] = da * half[a]
                p[b] = db * half[b]
                corners.append(p + centre)
            base = len(positions)
            positions += corners
            normals += [n] * 4
            # counter-clockwise seen from outside: (a, b, n) is right-handed for sign +1
            quad = [0, 1, 2, 0, 2, 3] if sign > 0 else [0, 2, 1, 0, 3, 2]
            indices += [base + q for q in quad]
    return (np.asarray(positions, np.float32), np.asarray(normals, np.float32),
            np.asarray(indices, np.uint16))


def figure_glb_bytes(spec: FigureSpec) -> bytes:
    """``spec`` as the bytes of a binary glTF 2.0 file."""
    import pygltflib as g

    gltf = g.GLTF2(asset=g.Asset(version="2.0", generator=GENERATOR), scene=0)
    data = bytearray()

    def add_array(array: np.ndarray, component_type: int, accessor_type: str, target=None, bounds=False) -> int:
        array = np.ascontiguousarray(array)
        offset = len(data)
        data.extend(array.tobytes())
        data.extend(b"\0" * (-len(data) % ALIGN))
        gltf.bufferViews.append(g.BufferView(buffer=0, byteOffset=offset, byteLength=array.nbytes, target=target))
        acc = g.Accessor(bufferView=len(gltf.bufferViews) - 1, componentType=component_type, count=array.shape[0],
                         type=accessor_type)
        if bounds:
            acc.min = array.min(axis=0).tolist()
            acc.max = array.max(axis=0).tolist()
        gltf.accessors.append(acc)
        return len(gltf.accessors) - 1

    time_acc = add_array(spec.times.astype(np.float32), g.FLOAT, g.SCALAR, bounds=True)
    channels, samplers = [], []
    for i, joint in enumerate(spec.joints):
        node = g.Node(name=joint.name, translation=list(joint.translation), rotation=joint.rotations[0].tolist())
        if joint.part is not None:
            pos, nrm, idx = _box(joint.part.size, joint.part.offset)
            material = g.Material(name=joint.part.name, pbrMetallicRoughness=g.PbrMetallicRoughness(
                baseColorFactor=[*joint.part.color, 1.0], metallicFactor=0.0, roughnessFactor=1.0))
            gltf.materials.append(material)
            prim = g.Primitive(attributes=g.Attributes(
                POSITION=add_array(pos, g.FLOAT, g.VEC3, g.ARRAY_BUFFER, bounds=True),
                NORMAL=add_array(nrm, g.FLOAT, g.VEC3, g.ARRAY_BUFFER)),
                indices=add_array(idx, g.UNSIGNED_SHORT, g.SCALAR, g.ELEMENT_ARRAY_BUFFER),
                material=len(gltf.materials) - 1)
            gltf.meshes.append(g.Mesh(name=joint.part.name, primitives=[prim]))
            node.mesh = len(gltf.meshes) - 1
        gltf.nodes.append(node)
        if joint.parent >= 0:
            parent = gltf.nodes[joint.parent]
            parent.children = (parent.children or []) + [i]
        if not np.allclose(joint.rotations, joint.rotations[0]):
            out = add_array(joint.rotations.astype(np.float32), g.FLOAT, g.VEC4)
            samplers.append(g.AnimationSampler(input=time_acc, output=out, interpolation="LINEAR"))
            channels.append(g.AnimationChannel(sampler=len(samplers) - 1, target=g.AnimationChannelTarget(
                node=i, path="rotation")))
    gltf.scenes.append(g.Scene(nodes=[0]))
    gltf.animations.append(g.Animation(name="Move", channels=channels, samplers=samplers))
    gltf.buffers.append(g.Buffer(byteLength=len(data)))
    gltf.set_binary_blob(bytes(data))
    return b"".join(gltf.save_to_bytes())


def write_figure_glb(spec: FigureSpec, path: str | Path) -> Path:
    """Write ``spec`` as a binary glTF 2.0 file at ``path`` (atomically); returns the path."""
    path = Path(path)
    with atomic_file(path) as f:
        f.write(figure_glb_bytes(spec))
    return path


def write_figures(folder: str | Path, count: int, seed: int = 0, overwrite: bool = False) -> List[Path]:
    """Write figures ``0 .. count-1`` of ``seed`` into ``folder`` as ``<name>.glb``; returns their paths.

    A file already there with the same bytes is left alone; one with other bytes stops the call
    (:class:`FileExistsError`, nothing written) unless ``overwrite``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fresh = {}
    for index in range(count):
        spec = random_figure(seed, index)
        path, data = folder / f"{spec.name}.glb", figure_glb_bytes(spec)
        if path.exists() and path.read_bytes() != data and not overwrite:
            raise FileExistsError(f"{path} exists with other bytes (pass overwrite to replace it)")
        fresh[path] = data
    for path, data in fresh.items():
        if not (path.is_file() and path.read_bytes() == data):
            with atomic_file(path) as f:
                f.write(data)
    return list(fresh)


def main(argv: List[str] | None = None) -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m ss4d.data.procedural",
                                 description="Write seeded, animated box-figure GLB files (see the module docstring).")
    ap.add_argument("output", help="folder to write <name>.glb files into (created)")
    ap.add_argument("--count", type=int, default=200, help="figures 0 .. count-1 (default 200)")
    ap.add_argument("--seed", type=int, default=0, help="the set's seed (default 0)")
    ap.add_argument("--overwrite", action="store_true", help="replace files of the same name with other bytes")
    args = ap.parse_args(argv)
    if args.count < 1:
        ap.error("--count must be at least 1")
    try:
        paths = write_figures(args.output, args.count, args.seed, args.overwrite)
    except OSError as e:           # a file with other bytes in the way, a folder that cannot be written
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{len(paths)} figures in {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
