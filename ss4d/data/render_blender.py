"""Blender (bpy) worker: renders mesh sequences, or extracts them from Blender-importable files.

Runs *inside the Blender environment* (``.venv-blender``, PyPI ``bpy==5.0.1``, numpy<2) as a
subprocess; it imports only bpy, numpy and the standard library, never the ss4d package::

    .venv-blender/bin/python ss4d/data/render_blender.py JOB.json

``JOB.json`` (written by :mod:`ss4d.data.render`) has ``"mode"``:

* ``"render"`` - ``mesh_dir`` (``mesh.npz`` + ``mesh.json`` + textures, see ss4d.data.mesh), and
  ``frames``: ``[{"index": t, "out_dir": ..., "views": [{"c2w": 4x4 Blender c2w, "fov_x": rad,
  "width", "height", "file"}], "cond": {"out_dir", "file", camera...} | null}]``, plus render
  settings (``samples``, ``device``, ``denoise``, ``threads``). Writes RGBA PNGs and, per frame,
  ``depth.npz`` (``depth`` float16 [V, H, W], planar camera depth, ``inf`` = background).
* ``"list"`` - ``source``: writes ``{"clips": [{"name", "start", "end"}], "fps"}`` to ``output``.
* ``"extract"`` - ``source``, ``clip`` (action name or null), ``times`` (seconds), ``out_dir``:
  writes an *unnormalised* Z-up mesh sequence in the ss4d mesh format (one vertex per triangle
  corner, so UV seams need no special handling).

Scene: Cycles, transparent film, "Standard" view transform (colours as authored), a key point
light, a large top area light and a weak bottom area light (TRELLIS-like studio setup), both
faces drawn (no backface culling), smooth shading.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

try:
    import bpy  # noqa: F401  (only available in the Blender environment)
except ImportError:  # imported from the main environment, e.g. by documentation tools
    bpy = None

BACKGROUND_DEPTH = 1e9  # Cycles writes a huge value (1e10) where nothing is hit
LIGHTS = (  # (type, location, energy W, size) in the normalised Z-up scene
    ("POINT", (4.0, 1.0, 6.0), 1000.0, 0.0),
    ("AREA", (0.0, 0.0, 10.0), 10000.0, 100.0),
    ("AREA", (0.0, 0.0, -10.0), 1000.0, 100.0),
)
WRAP_TO_EXTENSION = {"repeat": "REPEAT", "clamp": "EXTEND", "mirror": "MIRROR"}
GPU_BACKENDS = ("OPTIX", "CUDA", "HIP", "ONEAPI", "METAL")
# light-path budget (TRELLIS-like: 1 diffuse + 1 glossy bounce), 1-pixel filter
CYCLES_BOUNCES = {"max_bounces": 4, "diffuse_bounces": 1, "glossy_bounces": 1, "transparent_max_bounces": 3,
                  "transmission_bounces": 3}
CYCLES_FILTER_WIDTH = 1.0
DEFAULT_SAMPLES = 64
CAMERA_CLIP = (0.01, 100.0)  # near / far clipping distances (scene is the unit cube at distance ~2)
DEFAULT_ROUGHNESS = 0.5
DEPTH_ITEM = "depth"


def log(msg: str) -> None:
    print(f"[render_blender] {msg}", flush=True)


# ------------------------------------------------------------------------------------ scene setup
def reset_scene() -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)


def setup_render(job: dict) -> None:
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    cyc = scene.cycles
    cyc.samples = int(job.get("samples", DEFAULT_SAMPLES))
    cyc.use_adaptive_sampling = True
    for name, value in CYCLES_BOUNCES.items():
        setattr(cyc, name, value)
    cyc.filter_width = CYCLES_FILTER_WIDTH
    cyc.use_denoising = bool(job.get("denoise", False))
    cyc.device = "CPU"
    if job.get("device", "auto") in ("auto", "gpu"):
        if enable_gpu():
            cyc.device = "GPU"
        elif job.get("device") == "gpu":
            raise RuntimeError("Blender found no GPU device")
    threads = int(job.get("threads", 0))
    if threads > 0:
        scene.render.threads_mode = "FIXED"
        scene.render.threads = threads
    scene.render.film_transparent = True
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.image_settings.color_depth = "8"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    world = bpy.data.worlds.new("world")
    world.color = (0.0, 0.0, 0.0)
    scene.world = world
    for i, (kind, loc, energy, size) in enumerate(LIGHTS):
        light = bpy.data.lights.new(f"light{i}", kind)
        light.energy = energy
        if kind == "AREA":
            light.size = size
        obj = bpy.data.objects.new(f"light{i}", light)
        obj.location = loc
        scene.collection.objects.link(obj)


def enable_gpu() -> bool:
    try:
        prefs = bpy.context.preferences.addons["cycles"].preferences
    except KeyError:
        return False
    for backend in GPU_BACKENDS:
        try:
            prefs.compute_device_type = backend
        except TypeError:
            continue
        prefs.get_devices()
        gpus = [d for d in prefs.devices if d.type == backend]
        if gpus:
            for d in prefs.devices:
                d.use = d.type == backend
            log(f"using {backend}: {[d.name for d in gpus]}")
            return True
    return False


def setup_depth_output(tmp_dir: str):
    """Compositor: Render Layers.Depth -> File Output (single-layer float EXR)."""
    scene = bpy.context.scene
    bpy.context.view_layer.use_pass_z = True
    tree = bpy.data.node_groups.new("ss4d_depth", "CompositorNodeTree")
    scene.compositing_node_group = tree
    rl = tree.nodes.new("CompositorNodeRLayers")
    out = tree.nodes.new("CompositorNodeOutputFile")
    out.directory = tmp_dir
    out.file_name = "view_"
    out.file_output_items.new("FLOAT", DEPTH_ITEM)
    out.format.media_type = "IMAGE"
    out.format.file_format = "OPEN_EXR"
    out.format.color_depth = "32"
    tree.links.new(rl.outputs["Depth"], out.inputs[DEPTH_ITEM])
    return os.path.join(tmp_dir, f"view_{DEPTH_ITEM}.exr")


def read_depth(path: str, width: int, height: int) -> np.ndarray:
    img = bpy.data.images.load(path, check_existing=False)
    try:
        buf = np.empty(width * height * img.channels, dtype=np.float32)
        img.pixels.foreach_get(buf)
    finally:
        bpy.data.images.remove(img)
    os.remove(path)
    depth = buf.reshape(height, width, -1)[::-1, :, 0]  # Blender images are stored bottom-up
    return np.where(depth > BACKGROUND_DEPTH, np.inf, depth).astype(np.float32)


def build_mesh(mesh_dir: Path):
    """Create the Blender object for an ss4d mesh sequence (frame 0 positions)."""
    with np.load(mesh_dir / "mesh.npz") as z:
        data = {k: z[k] for k in z.files}
    meta = json.loads((mesh_dir / "mesh.json").read_text())
    verts, faces = data["vertices"], data["faces"].astype(np.int64)
    nv, nf = verts.shape[1], len(faces)
    mesh = bpy.data.meshes.new("ss4d_mesh")
    mesh.vertices.add(nv)
    mesh.vertices.foreach_set("co", verts[0].astype(np.float32).ravel())
    mesh.loops.add(3 * nf)
    mesh.loops.foreach_set("vertex_index", faces.astype(np.int32).ravel())
    mesh.polygons.add(nf)
    mesh.polygons.foreach_set("loop_start", (np.arange(nf, dtype=np.int32) * 3))
    mesh.polygons.foreach_set("loop_total", np.full(nf, 3, np.int32))
    mesh.polygons.foreach_set("material_index", data["face_material"].astype(np.int32))
    mesh.polygons.foreach_set("use_smooth", np.ones(nf, dtype=bool))
    if "uv" in data:
        uv = data["uv"][faces.ravel()].astype(np.float32).copy()
        uv[:, 1] = 1.0 - uv[:, 1]  # glTF v points down the image, Blender v up
        layer = mesh.uv_layers.new(name="UVMap")
        layer.data.foreach_set("uv", uv.ravel())
    if "colors" in data:
        attr = mesh.color_attributes.new("Col", "FLOAT_COLOR", "POINT")
        attr.data.foreach_set("color", data["colors"].astype(np.float32).ravel())
    mesh.update()
    mesh.validate(clean_customdata=False)
    obj = bpy.data.objects.new("ss4d_object", mesh)
    bpy.context.scene.collection.objects.link(obj)
    for i, m in enumerate(meta["materials"]):
        obj.data.materials.append(make_material(m, mesh_dir, "colors" in data, i))
    return obj, verts


def make_material(m: dict, mesh_dir: Path, has_colors: bool, index: int):
    mat = bpy.data.materials.new(m.get("name") or f"mat{index}")
    mat.use_backface_culling = False
    nt = mat.node_tree
    if nt is None:  # older Blender: node trees are optional
        mat.use_nodes = True
        nt = mat.node_tree
    bsdf = next(n for n in nt.nodes if n.type == "BSDF_PRINCIPLED")
    bsdf.inputs["Roughness"].default_value = DEFAULT_ROUGHNESS
    bsdf.inputs["Metallic"].default_value = 0.0
    factor = list(m.get("base_color_factor", [1, 1, 1, 1]))
    color_socket = None
    if m.get("texture"):
        tex = nt.nodes.new("ShaderNodeTexImage")
        tex.image = bpy.data.images.load(str(mesh_dir / m["texture"]))
        tex.image.colorspace_settings.name = "sRGB"
        tex.extension = WRAP_TO_EXTENSION.get(m.get("wrap_s", "repeat"), "REPEAT")
        color_socket = tex.outputs["Color"]
    if has_colors:
        attr = nt.nodes.new("ShaderNodeVertexColor")
        attr.layer_name = "Col"
        color_socket = attr.outputs["Color"] if color_socket is None else multiply(nt, color_socket,
                                                                                   attr.outputs["Color"])
    if color_socket is None:
        bsdf.inputs["Base Color"].default_value = factor[:3] + [1.0]
    else:
        rgb = nt.nodes.new("ShaderNodeRGB")
        rgb.outputs[0].default_value = factor[:3] + [1.0]
        nt.links.new(multiply(nt, color_socket, rgb.outputs[0]), bsdf.inputs["Base Color"])
    return mat


def multiply(nt, a, b):
    node = nt.nodes.new("ShaderNodeMix")
    node.data_type = "RGBA"
    node.blend_type = "MULTIPLY"
    node.inputs["Factor"].default_value = 1.0
    nt.links.new(a, node.inputs[6])  # A (colour)
    nt.links.new(b, node.inputs[7])  # B (colour)
    return node.outputs[2]  # Result (colour)


def place_camera(cam_obj, view: dict) -> None:
    from mathutils import Matrix

    scene = bpy.context.scene
    scene.render.resolution_x = int(view["width"])
    scene.render.resolution_y = int(view["height"])
    scene.render.resolution_percentage = 100
    cam_obj.data.sensor_fit = "HORIZONTAL"
    cam_obj.data.angle_x = float(view["fov_x"])
    cam_obj.matrix_world = Matrix([list(r) for r in view["c2w"]])


# ------------------------------------------------------------------------------------ modes
def run_render(job: dict) -> None:
    reset_scene()
    setup_render(job)
    depth_tmp = os.path.join(job["work_dir"], "depth_tmp")
    os.makedirs(depth_tmp, exist_ok=True)
    depth_path = setup_depth_output(depth_tmp)
    obj, verts = build_mesh(Path(job["mesh_dir"]))
    cam = bpy.data.cameras.new("cam")
    cam.clip_start, cam.clip_end = CAMERA_CLIP
    cam_obj = bpy.data.objects.new("cam", cam)
    bpy.context.scene.collection.objects.link(cam_obj)
    bpy.context.scene.camera = cam_obj
    scene = bpy.context.scene
    t_start, n_images = time.time(), 0
    for fr in job["frames"]:
        mesh = obj.data
        mesh.vertices.foreach_set("co", verts[fr["index"]].astype(np.float32).ravel())
        mesh.update()
        depths = []
        if fr.get("views"):
            os.makedirs(fr["out_dir"], exist_ok=True)
        for view in fr.get("views", []):
            place_camera(cam_obj, view)
            scene.render.filepath = os.path.join(fr["out_dir"], view["file"])
            bpy.ops.render.render(write_still=True)
            depths.append(read_depth(depth_path, int(view["width"]), int(view["height"])))
            n_images += 1
        if depths:
            np.savez_compressed(os.path.join(fr["out_dir"], "depth.npz"), depth=np.stack(depths).astype(np.float16))
        cond = fr.get("cond")
        if cond:
            os.makedirs(cond["out_dir"], exist_ok=True)
            place_camera(cam_obj, cond)
            scene.render.filepath = os.path.join(cond["out_dir"], cond["file"])
            bpy.ops.render.render(write_still=True)
            read_depth(depth_path, int(cond["width"]), int(cond["height"]))
            n_images += 1
    log(f"rendered {n_images} images in {time.time() - t_start:.1f}s")


def import_source(source: str) -> None:
    reset_scene()
    ext = Path(source).suffix.lower()
    if ext == ".blend":
        bpy.ops.wm.open_mainfile(filepath=source)
    elif ext == ".fbx":
        bpy.ops.import_scene.fbx(filepath=source)
    elif ext in (".glb", ".gltf"):
        bpy.ops.import_scene.gltf(filepath=source)
    elif ext == ".obj":
        bpy.ops.wm.obj_import(filepath=source)
    elif ext in (".usd", ".usda", ".usdc", ".usdz"):
        bpy.ops.wm.usd_import(filepath=source)
    elif ext == ".abc":
        bpy.ops.wm.alembic_import(filepath=source)
    elif ext == ".dae":
        raise RuntimeError("COLLADA import was removed from Blender 5; convert the file first")
    else:
        raise RuntimeError(f"unsupported file type for the Blender path: {ext}")


def animated_ids() -> list:
    """Objects and shape-key blocks of the scene that carry animation data."""
    ids = []
    for o in bpy.context.scene.objects:
        if o.animation_data is not None:
            ids.append(o)
        keys = getattr(getattr(o, "data", None), "shape_keys", None)
        if keys is not None and keys.animation_data is not None:
            ids.append(keys)
    return ids


def list_clips_blender() -> tuple[list[dict], float]:
    """Actions as clips; times in seconds with Blender frame f <-> time f / fps (the glTF importer
    maps glTF time 0 to frame 0). Ordered as the importer's NLA tracks, else by name."""
    scene = bpy.context.scene
    fps = scene.render.fps / scene.render.fps_base
    order = []
    for idb in animated_ids():
        for track in idb.animation_data.nla_tracks:
            for strip in track.strips:
                if strip.action is not None and strip.action.name not in order:
                    order.append(strip.action.name)
    order.reverse()  # the glTF importer stacks tracks last-clip-first; this restores the file order
    rank = {n: i for i, n in enumerate(order)}
    actions = sorted(bpy.data.actions, key=lambda a: (rank.get(a.name, len(rank)), a.name))
    return [{"name": a.name, "start": a.frame_range[0] / fps, "end": a.frame_range[1] / fps} for a in actions], fps


def assign_clip(name: str | None) -> None:
    """Make action ``name`` the only animation playing (NLA tracks muted, action slots bound)."""
    ids = animated_ids()
    for idb in ids:  # silence everything first
        idb.animation_data.action = None
        for track in idb.animation_data.nla_tracks:
            track.mute = True
    if name is None:
        return
    act = bpy.data.actions.get(name)
    if act is None:
        raise RuntimeError(f"no action named {name!r}")
    slots = list(getattr(act, "slots", []) or [])
    bound = 0
    if slots:
        for slot in slots:
            target = find_slot_target(slot)
            if target is None:
                continue
            if target.animation_data is None:
                target.animation_data_create()
            target.animation_data.action = act
            try:
                target.animation_data.action_slot = slot
            except (TypeError, RuntimeError, AttributeError):
                pass
            bound += 1
    if not bound:  # legacy (slot-less) actions: give it to whatever was animated, or the armatures
        targets = ids or [o for o in bpy.context.scene.objects if o.type == "ARMATURE"]
        for idb in targets:
            if idb.animation_data is None:
                idb.animation_data_create()
            idb.animation_data.action = act
            bound += 1
    if not bound:
        raise RuntimeError(f"action {name!r} has no target in the scene")


def find_slot_target(slot):
    kind = getattr(slot, "target_id_type", "OBJECT")
    label = getattr(slot, "name_display", "") or slot.name[2:]
    if kind == "OBJECT":
        return bpy.context.scene.objects.get(label)
    if kind == "KEY":
        key = bpy.data.shape_keys.get(label)
        if key is not None:
            return key
        obj = bpy.context.scene.objects.get(label)
        return getattr(getattr(obj, "data", None), "shape_keys", None)
    return None


def renderable(obj) -> bool:
    if obj.hide_render or obj.type not in ("MESH", "CURVE", "SURFACE", "META", "FONT"):
        return False
    if obj.users_collection and all(c.hide_render for c in obj.users_collection):
        return False  # e.g. the glTF importer's bone-shape icosphere ("glTF_not_exported")
    return True


def extract_frame(depsgraph) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray, list]:
    """Triangle soup of all visible mesh objects: positions [3F, 3], uv [3F, 2] | None, material [F]."""
    pos, uvs, mats, any_uv, material_list = [], [], [], False, []
    mat_index: dict = {}
    for obj in bpy.context.scene.objects:
        if not renderable(obj):
            continue
        ev = obj.evaluated_get(depsgraph)
        mesh = ev.to_mesh()
        if mesh is None:
            continue
        mesh.calc_loop_triangles()
        n_tri = len(mesh.loop_triangles)
        if n_tri == 0:
            ev.to_mesh_clear()
            continue
        loops = np.empty(n_tri * 3, np.int32)
        mesh.loop_triangles.foreach_get("loops", loops)
        vidx = np.empty(len(mesh.loops), np.int32)
        mesh.loops.foreach_get("vertex_index", vidx)
        co = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", co)
        co = co.reshape(-1, 3).astype(np.float64)
        mw = np.array(ev.matrix_world)
        world = co @ mw[:3, :3].T + mw[:3, 3]
        pos.append(world[vidx[loops]])
        layer = mesh.uv_layers.active
        if layer is not None:
            uv = np.empty(len(mesh.loops) * 2, np.float32)
            layer.data.foreach_get("uv", uv)
            uv = uv.reshape(-1, 2)[loops]
            uv[:, 1] = 1.0 - uv[:, 1]
            uvs.append(uv)
            any_uv = True
        else:
            uvs.append(None)
        tri_mat = np.empty(n_tri, np.int32)
        mesh.loop_triangles.foreach_get("material_index", tri_mat)
        slots = [s.material for s in obj.material_slots] or [None]
        remap = []
        for m in slots:
            key = m.name if m is not None else None
            if key not in mat_index:
                mat_index[key] = len(material_list)
                material_list.append(m)
            remap.append(mat_index[key])
        mats.append(np.asarray(remap, np.int32)[np.clip(tri_mat, 0, len(remap) - 1)])
        ev.to_mesh_clear()
    if not pos:
        raise RuntimeError("the scene has no renderable geometry")
    uv_all = None
    if any_uv:
        uv_all = np.concatenate([u if u is not None else np.zeros((len(p), 2), np.float32) for u, p in zip(uvs, pos)])
    return np.concatenate(pos), uv_all, np.concatenate(mats), material_list


def export_material(mat, out_dir: Path, index: int) -> dict:
    entry = {"name": mat.name if mat else "default", "base_color_factor": [1.0, 1.0, 1.0, 1.0], "texture": None,
             "wrap_s": "repeat", "wrap_t": "repeat", "double_sided": True, "alpha_mode": "OPAQUE"}
    if mat is None or mat.node_tree is None:
        if mat is not None:
            entry["base_color_factor"] = list(mat.diffuse_color)
        return entry
    bsdf = next((n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED"), None)
    if bsdf is None:
        entry["base_color_factor"] = list(mat.diffuse_color)
        return entry
    sock = bsdf.inputs["Base Color"]
    if not sock.is_linked:
        entry["base_color_factor"] = list(sock.default_value)
        return entry
    # find an image texture upstream of Base Color (through mix/multiply nodes)
    stack, seen = [sock.links[0].from_node], set()
    while stack:
        node = stack.pop()
        if node.name in seen:
            continue
        seen.add(node.name)
        if node.type == "TEX_IMAGE" and node.image is not None:
            img = node.image
            w, h = img.size
            if w and h:
                px = np.empty(w * h * 4, np.float32)
                img.pixels.foreach_get(px)
                px = px.reshape(h, w, 4)[::-1]
                if img.colorspace_settings.name not in ("sRGB",):
                    px[..., :3] = linear_to_srgb(px[..., :3])
                name = f"texture_{index}.png"
                write_png(out_dir / name, (np.clip(px, 0, 1) * 255 + 0.5).astype(np.uint8))
                entry["texture"] = name
                entry["wrap_s"] = entry["wrap_t"] = {"REPEAT": "repeat", "EXTEND": "clamp", "MIRROR": "mirror"}.get(
                    node.extension, "repeat")
            break
        for inp in node.inputs:
            for link in inp.links:
                stack.append(link.from_node)
    return entry


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def write_png(path: Path, rgba: np.ndarray) -> None:
    h, w = rgba.shape[:2]
    img = bpy.data.images.new("ss4d_tmp", w, h, alpha=True)
    try:
        img.pixels.foreach_set((rgba[::-1].astype(np.float32) / 255.0).ravel())
        img.filepath_raw = str(path)
        img.file_format = "PNG"
        img.save()
    finally:
        bpy.data.images.remove(img)


def run_extract(job: dict) -> None:
    import_source(job["source"])
    scene = bpy.context.scene
    fps = scene.render.fps / scene.render.fps_base
    assign_clip(job.get("clip"))
    frames, uv0, mats0, material_list = [], None, None, None
    for t in job["times"]:
        f = float(t) * fps  # frame f <-> time f / fps (as list_clips_blender)
        scene.frame_set(int(math.floor(f)), subframe=f - math.floor(f))
        pos, uv, mats, mlist = extract_frame(bpy.context.evaluated_depsgraph_get())
        if frames and len(pos) != len(frames[0]):
            raise RuntimeError("topology changes during the clip; not supported")
        if not frames:
            uv0, mats0, material_list = uv, mats, mlist
        frames.append(pos)
    out = Path(job["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    n_corners = len(frames[0])
    arrays = {"vertices": np.stack(frames).astype(np.float32),
              "faces": np.arange(n_corners, dtype=np.int32).reshape(-1, 3),
              "times": np.asarray(job["times"], np.float64), "face_material": mats0.astype(np.int32)}
    if uv0 is not None:
        arrays["uv"] = uv0.astype(np.float32)
    np.savez(out / "mesh.npz", **arrays)
    meta = {"name": job.get("name", ""), "source": job["source"], "normalization": None,
            "materials": [export_material(m, out, i) for i, m in enumerate(material_list)]}
    (out / "mesh.json").write_text(json.dumps(meta, indent=1))
    log(f"extracted {len(frames)} frames, {n_corners // 3} triangles")


def run_list(job: dict) -> None:
    import_source(job["source"])
    clips, fps = list_clips_blender()
    Path(job["output"]).write_text(json.dumps({"clips": clips, "fps": fps}))


def main(argv: list[str]) -> int:
    if bpy is None:
        print("render_blender.py must run in the Blender environment (pip install bpy==5.0.1)", file=sys.stderr)
        return 2
    if len(argv) != 2:
        print("usage: render_blender.py JOB.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[1]).read_text())
    mode = job.get("mode")
    {"render": run_render, "extract": run_extract, "list": run_list}[mode](job)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
