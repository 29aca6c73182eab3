"""Minimal glTF 2.0 container reader: JSON + binary buffers + typed accessors + images.

Supports ``.glb`` (binary container, embedded BIN chunk) and ``.gltf`` (JSON with buffers/images
given as ``data:`` URIs or as files next to the ``.gltf``). Accessors are decoded into numpy arrays
with their glTF shape (``SCALAR`` -> [N], ``VEC3`` -> [N, 3], ``MAT4`` -> [N, 4, 4] *column-major as
stored*, see :meth:`GLTFDocument.accessor`), including strided buffer views, normalized integer
components and sparse accessors.

Not supported (a :class:`GLTFError` names them): Draco / meshopt compressed geometry
(``KHR_draco_mesh_compression``, ``EXT_meshopt_compression``) - import such files through the
Blender path, whose importer decodes them.
"""
from __future__ import annotations

import base64
import io
import json
import struct
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

GLB_MAGIC = b"glTF"
GLB_HEADER_BYTES = 12
GLB_CHUNK_HEADER_BYTES = 8
GLB_CHUNK_JSON = 0x4E4F534A  # "JSON"
GLB_CHUNK_BIN = 0x004E4942  # "BIN\0"

# glTF componentType -> numpy dtype (little endian, as the spec requires)
COMPONENT_DTYPES = {
    5120: np.dtype("<i1"),
    5121: np.dtype("<u1"),
    5122: np.dtype("<i2"),
    5123: np.dtype("<u2"),
    5125: np.dtype("<u4"),
    5126: np.dtype("<f4"),
}
# glTF accessor type -> number of components
TYPE_COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
# Matrix accessors: columns are padded to 4-byte boundaries for 1- and 2-byte components.
MATRIX_COLUMN_ALIGNMENT = 4

UNSUPPORTED_EXTENSIONS = {
    "KHR_draco_mesh_compression": "Draco-compressed geometry",
    "EXT_meshopt_compression": "meshopt-compressed buffers",
}


class GLTFError(ValueError):
    """Raised for malformed or unsupported glTF input (message is a single line)."""


@dataclass
class GLTFDocument:
    """A parsed glTF asset: the JSON tree plus its binary buffers.

    Attributes:
        json: the glTF JSON object (dict).
        buffers: one ``bytes`` per entry of ``json["buffers"]``.
        base_dir: folder used to resolve relative URIs (external buffers / images).
        path: the file the document was read from (for messages).
    """

    json: dict
    buffers: list[bytes]
    base_dir: Path
    path: Path
    _accessor_cache: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ generic accessors
    def get(self, key: str) -> list:
        """The top-level JSON array ``key`` (empty list when absent)."""
        return self.json.get(key, []) or []

    def buffer_view_bytes(self, index: int) -> memoryview:
        """Raw bytes of buffer view ``index`` (without applying ``byteStride``)."""
        views = self.get("bufferViews")
        if not 0 <= index < len(views):
            raise GLTFError(f"{self.path.name}: bufferView {index} out of range")
        view = views[index]
        buf = self.buffers[view["buffer"]]
        start = view.get("byteOffset", 0)
        end = start + view["byteLength"]
        if end > len(buf):
            raise GLTFError(f"{self.path.name}: bufferView {index} exceeds its buffer ({end} > {len(buf)} bytes)")
        return memoryview(buf)[start:end]

    def accessor(self, index: int) -> np.ndarray:
        """Decode accessor ``index`` to a numpy array.

        Returns float32 for float or ``normalized`` integer accessors (normalized per the spec:
        unsigned -> x / max, signed -> max(x / max, -1)), otherwise the integer dtype widened to
        int64 (indices, joint ids). Shapes: SCALAR [N], VECk [N, k], MATk [N, k, k] where
        ``out[n, r, c]`` is row r, column c (glTF stores matrices column-major; this is undone).
        """
        if index in self._accessor_cache:
            return self._accessor_cache[index]
        accessors = self.get("accessors")
        if not 0 <= index < len(accessors):
            raise GLTFError(f"{self.path.name}: accessor {index} out of range")
        acc = accessors[index]
        try:
            dtype = COMPONENT_DTYPES[acc["componentType"]]
            ncomp = TYPE_COMPONENTS[acc["type"]]
        except KeyError as exc:
            raise GLTFError(f"{self.path.name}: accessor {index} has unknown type/componentType {exc}") from None
        count = acc["count"]

        if "bufferView" in acc:
            data = self._read_strided(acc, dtype, ncomp, count)
        else:  # all zeros (possibly overridden by sparse)
            data = np.zeros((count, ncomp), dtype=dtype)
        if "sparse" in acc:
            data = data.copy()
            self._apply_sparse(acc["sparse"], data, dtype, ncomp)

        out = self._convert(data, dtype, acc.get("normalized", False))
        if acc["type"].startswith("MAT"):
            k = int(round(ncomp ** 0.5))
            out = out.reshape(count, k, k).transpose(0, 2, 1)  # column-major -> [n, row, col]
        elif ncomp == 1:
            out = out.reshape(count)
        else:
            out = out.reshape(count, ncomp)
        out.setflags(write=False)
        self._accessor_cache[index] = out
        return out

    def _read_strided(self, acc: dict, dtype: np.dtype, ncomp: int, count: int) -> np.ndarray:
        view_idx = acc["bufferView"]
        view = self.get("bufferViews")[view_idx]
        raw = self.buffer_view_bytes(view_idx)
        offset = acc.get("byteOffset", 0)
        itemsize = dtype.itemsize
        if acc["type"].startswith("MAT") and itemsize < MATRIX_COLUMN_ALIGNMENT:
            k = int(round(ncomp ** 0.5))
            col_bytes = -(-k * itemsize // MATRIX_COLUMN_ALIGNMENT) * MATRIX_COLUMN_ALIGNMENT
            elem_bytes = col_bytes * k
            stride = view.get("byteStride", elem_bytes)
            rows = []
            for n in range(count):
                base = offset + n * stride
                cols = [np.frombuffer(raw, dtype, k, base + c * col_bytes) for c in range(k)]
                rows.append(np.concatenate(cols))
            return np.stack(rows) if rows else np.zeros((0, ncomp), dtype)
        elem_bytes = itemsize * ncomp
        stride = view.get("byteStride") or elem_bytes
        if count == 0:
            return np.zeros((0, ncomp), dtype)
        needed = offset + stride * (count - 1) + elem_bytes
        if needed > len(raw):
            raise GLTFError(f"{self.path.name}: accessor reads past its bufferView ({needed} > {len(raw)} bytes)")
        if stride == elem_bytes:
            return np.frombuffer(raw, dtype, count * ncomp, offset).reshape(count, ncomp)
        arr = np.lib.stride_tricks.as_strided(
            np.frombuffer(raw, np.uint8, len(raw) - offset, offset),
            shape=(count, elem_bytes), strides=(stride, 1))
        return np.ascontiguousarray(arr).view(dtype).reshape(count, ncomp)

    def _apply_sparse(self, sparse: dict, data: np.ndarray, dtype: np.dtype, ncomp: int) -> None:
        n = sparse["count"]
        idx_info, val_info = sparse["indices"], sparse["values"]
        idx_dtype = COMPONENT_DTYPES[idx_info["componentType"]]
        idx_raw = self.buffer_view_bytes(idx_info["bufferView"])
        idx = np.frombuffer(idx_raw, idx_dtype, n, idx_info.get("byteOffset", 0)).astype(np.int64)
        val_raw = self.buffer_view_bytes(val_info["bufferView"])
        vals = np.frombuffer(val_raw, dtype, n * ncomp, val_info.get("byteOffset", 0)).reshape(n, ncomp)
        if n and (idx.min() < 0 or idx.max() >= len(data)):
            raise GLTFError(f"{self.path.name}: sparse accessor index out of range")
        data[idx] = vals

    @staticmethod
    def _convert(data: np.ndarray, dtype: np.dtype, normalized: bool) -> np.ndarray:
        if dtype.kind == "f":
            return data.astype(np.float32)
        if normalized:
            info = np.iinfo(dtype)
            out = data.astype(np.float32) / float(info.max)
            return np.maximum(out, -1.0) if dtype.kind == "i" else out
        return data.astype(np.int64)

    # ------------------------------------------------------------------ images
    def image_bytes(self, index: int) -> bytes:
        """Encoded bytes (PNG/JPEG/...) of image ``index`` (buffer view, data URI or file)."""
        images = self.get("images")
        if not 0 <= index < len(images):
            raise GLTFError(f"{self.path.name}: image {index} out of range")
        img = images[index]
        if "bufferView" in img:
            return bytes(self.buffer_view_bytes(img["bufferView"]))
        if "uri" in img:
            return _read_uri(img["uri"], self.base_dir, self.path)
        raise GLTFError(f"{self.path.name}: image {index} has neither uri nor bufferView")

    def image_rgba(self, index: int) -> np.ndarray:
        """Decode image ``index`` to uint8 RGBA [H, W, 4] (raises GLTFError if undecodable)."""
        from PIL import Image

        try:
            with Image.open(io.BytesIO(self.image_bytes(index))) as im:
                return np.asarray(im.convert("RGBA")).copy()
        except GLTFError:
            raise
        except Exception as exc:  # PIL raises many types; keep one line
            raise GLTFError(f"{self.path.name}: cannot decode image {index}: {exc}") from None


def _read_uri(uri: str, base_dir: Path, src: Path) -> bytes:
    if uri.startswith("data:"):
        header, _, payload = uri.partition(",")
        if ";base64" in header:
            try:
                return base64.b64decode(payload, validate=False)
            except Exception as exc:
                raise GLTFError(f"{src.name}: bad base64 data URI: {exc}") from None
        return urllib.parse.unquote_to_bytes(payload)
    target = base_dir / urllib.parse.unquote(uri)
    if not target.is_file():
        raise GLTFError(f"{src.name}: external file not found: {uri}")
    return target.read_bytes()


def load_gltf(path: str | Path) -> GLTFDocument:
    """Read a ``.glb`` or ``.gltf`` file into a :class:`GLTFDocument`.

    Raises:
        GLTFError: one-line message for truncated/corrupt containers, missing buffers, bad JSON,
            glTF versions other than 2.x, or required extensions that are not supported.
    """
    path = Path(path)
    if not path.is_file():
        raise GLTFError(f"{path}: no such file")
    raw = path.read_bytes()
    bin_chunk: bytes | None = None
    if raw[:4] == GLB_MAGIC:
        doc_json, bin_chunk = _parse_glb(raw, path)
    else:
        try:
            doc_json = json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise GLTFError(f"{path.name}: not a GLB and not valid glTF JSON ({exc.__class__.__name__})") from None
    if not isinstance(doc_json, dict) or "asset" not in doc_json:
        raise GLTFError(f"{path.name}: glTF JSON lacks the required 'asset' object")
    version = str(doc_json["asset"].get("version", ""))
    if not version.startswith("2"):
        raise GLTFError(f"{path.name}: glTF version {version!r} is not supported (need 2.x)")
    for ext in doc_json.get("extensionsRequired", []) or []:
        if ext in UNSUPPORTED_EXTENSIONS:
            raise GLTFError(f"{path.name}: {UNSUPPORTED_EXTENSIONS[ext]} ({ext}) is not supported by the "
                            "numpy loader; use the Blender path (--mesh-source blender)")

    buffers = []
    for i, b in enumerate(doc_json.get("buffers", []) or []):
        if "uri" in b:
            data = _read_uri(b["uri"], path.parent, path)
        elif bin_chunk is not None and i == 0:
            data = bin_chunk
        else:
            raise GLTFError(f"{path.name}: buffer {i} has no uri and no GLB BIN chunk")
        if len(data) < b.get("byteLength", 0):
            raise GLTFError(f"{path.name}: buffer {i} is truncated ({len(data)} < {b['byteLength']} bytes)")
        buffers.append(data)
    return GLTFDocument(json=doc_json, buffers=buffers, base_dir=path.parent, path=path)


def _parse_glb(raw: bytes, path: Path) -> tuple[dict, bytes | None]:
    if len(raw) < GLB_HEADER_BYTES + GLB_CHUNK_HEADER_BYTES:
        raise GLTFError(f"{path.name}: GLB too short ({len(raw)} bytes)")
    _, version, length = struct.unpack_from("<4sII", raw, 0)
    if version != 2:
        raise GLTFError(f"{path.name}: GLB container version {version} is not supported (need 2)")
    if length > len(raw):
        raise GLTFError(f"{path.name}: GLB truncated (header says {length} bytes, file has {len(raw)})")
    pos = GLB_HEADER_BYTES
    doc_json: Any = None
    bin_chunk = None
    while pos + GLB_CHUNK_HEADER_BYTES <= length:
        clen, ctype = struct.unpack_from("<II", raw, pos)
        pos += GLB_CHUNK_HEADER_BYTES
        if pos + clen > length:
            raise GLTFError(f"{path.name}: GLB chunk runs past the end of the file")
        chunk = raw[pos:pos + clen]
        if ctype == GLB_CHUNK_JSON and doc_json is None:
            try:
                doc_json = json.loads(chunk.decode("utf-8").rstrip(" \x00"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise GLTFError(f"{path.name}: GLB JSON chunk is invalid ({exc.__class__.__name__})") from None
        elif ctype == GLB_CHUNK_BIN and bin_chunk is None:
            bin_chunk = chunk
        pos += clen
    if doc_json is None:
        raise GLTFError(f"{path.name}: GLB has no JSON chunk")
    return doc_json, bin_chunk
