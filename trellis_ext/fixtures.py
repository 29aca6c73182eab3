"""Generic harness for reference fixtures in TRELLIS's / SS4D's published fixture layout.

Layout it understands (any root; see ``../shared/trellis_reference`` and ``ss4d_reference``)::

    <root>/manifests/<ckpt>.json            {"checkpoint_json": {"name", "args"}, "state_dict": {key: {shape, dtype}}}
    <root>/<group>/<model>/model.json       {"name": <class>, "args": {...}}  (+ model_elastic.json etc.)
    <root>/<group>/<model>/model.safetensors
    <root>/<group>/<model>/[<case>/]inputs.safetensors, outputs.safetensors, [intermediates.safetensors]

Models are discovered by scanning, cases are the folders holding ``inputs.safetensors`` (the model
folder itself or its sub-folders), and the forward call is chosen by the class name in the JSON
through ``RUNNERS`` (packages built on trellis_ext register their own classes' runners).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from .models.registry import ELASTIC_PREFIX
from .sparse import SparseTensor

__all__ = ["FixtureModel", "discover_models", "discover_manifests", "assemble_inputs", "flatten_outputs",
           "RUNNERS", "register_runner", "run_case", "compare_tensors", "capture_intermediates",
           "manifest_entries", "check_manifest", "check_config_against_manifest", "load_fixture_model"]

INPUTS, OUTPUTS, INTERMEDIATES = "inputs.safetensors", "outputs.safetensors", "intermediates.safetensors"
SPARSE_PARTS = ("coords", "feats")
GAUSSIAN_ATTRS = ("_xyz", "_features_dc", "_scaling", "_rotation", "_opacity",
                  "get_xyz", "get_features", "get_scaling", "get_rotation", "get_opacity")


@dataclass
class FixtureModel:
    """One tiny model: its folder, the JSON configs that load ``model.safetensors``, its cases."""
    folder: Path
    configs: List[Path]                   # model.json, model_elastic.json, ...
    weights: Path
    cases: List[Path] = field(default_factory=list)

    @property
    def class_name(self) -> str:
        return json.loads(self.configs[0].read_text())["name"]

    @property
    def id(self) -> str:
        return f"{self.folder.parent.name}/{self.folder.name}"


def load_fixture_model(model: FixtureModel, config: Path, workdir: Path) -> nn.Module:
    """Load ``model``'s weights with ``config`` (e.g. ``model_elastic.json``) through the public
    ``from_pretrained``: the pair ``<stem>.json`` + ``<stem>.safetensors`` is staged in ``workdir``
    (config copied, weights linked) since the loader expects one stem for both files."""
    import shutil

    from .models.checkpoint import from_pretrained

    stem = Path(workdir) / Path(config).stem
    shutil.copy(config, f"{stem}.json")
    Path(f"{stem}.safetensors").symlink_to(model.weights)
    return from_pretrained(str(stem))


def discover_models(root: Path) -> List[FixtureModel]:
    """Every folder under ``root`` (any depth) holding ``model.json`` + ``model.safetensors``."""
    found = []
    for cfg in sorted(Path(root).rglob("model.json")):
        folder = cfg.parent
        weights = folder / "model.safetensors"
        if not weights.is_file():
            continue
        configs = [cfg] + sorted(p for p in folder.glob("model_*.json"))
        cases = [folder] if (folder / INPUTS).is_file() else []
        cases += sorted(p for p in folder.iterdir() if p.is_dir() and (p / INPUTS).is_file())
        found.append(FixtureModel(folder, configs, weights, cases))
    return found


def discover_manifests(root: Path) -> List[Path]:
    """``<root>/manifests/*.json`` files that describe one checkpoint (have ``checkpoint_json``)."""
    out = []
    for p in sorted((Path(root) / "manifests").glob("*.json")):
        try:
            if "checkpoint_json" in json.loads(p.read_text()):
                out.append(p)
        except json.JSONDecodeError:
            continue
    return out


def manifest_entries(manifest: Dict[str, Any]) -> Dict[str, Tuple[Tuple[int, ...], str]]:
    return {k: (tuple(v["shape"]), v["dtype"]) for k, v in manifest["state_dict"].items()}


DTYPE_NAMES = {torch.float16: "F16", torch.float32: "F32", torch.bfloat16: "BF16"}


def check_config_against_manifest(manifest_path: Path, configs_dir: Path) -> List[str]:
    """Build ``<configs_dir>/<model_name>.json`` (the manifest's own checkpoint JSON when no such file
    exists) and list its differences from the manifest: the config itself, then keys/shapes/dtypes."""
    manifest = json.loads(Path(manifest_path).read_text())
    ours = Path(configs_dir) / f"{manifest['model_name']}.json"
    config = json.loads(ours.read_text()) if ours.is_file() else None
    if config is not None and config != manifest["checkpoint_json"]:
        return [f"{ours} differs from the manifest's checkpoint JSON"]
    return check_manifest(manifest_path, config)


def check_manifest(manifest_path: Path, config: Optional[Dict[str, Any]] = None) -> List[str]:
    """Build ``config`` (default: the manifest's ``checkpoint_json``) on the meta device and list
    every key / shape / dtype difference from the manifest's state dict (empty = identical)."""
    from .models.checkpoint import build_model

    manifest = json.loads(Path(manifest_path).read_text())
    with torch.device("meta"):
        model = build_model(config or manifest["checkpoint_json"], source=str(manifest_path))
    got = {k: (tuple(v.shape), DTYPE_NAMES.get(v.dtype, str(v.dtype))) for k, v in model.state_dict().items()}
    want = manifest_entries(manifest)
    problems = [f"missing key {k}" for k in sorted(set(want) - set(got))]
    problems += [f"unexpected key {k}" for k in sorted(set(got) - set(want))]
    problems += [f"{k}: built {got[k]} vs manifest {want[k]}" for k in sorted(set(got) & set(want)) if got[k] != want[k]]
    return problems


# ---------------------------------------------------------------------------- inputs / outputs
def assemble_inputs(flat: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    """``x.coords`` + ``x.feats`` -> SparseTensor ``x``; 0-d integer tensors -> int; rest as is."""
    out: Dict[str, Any] = {}
    sparse_names = {k.rsplit(".", 1)[0] for k in flat if k.endswith(".coords")}
    for name in sparse_names:
        out[name] = SparseTensor(flat[f"{name}.feats"], flat[f"{name}.coords"])
    for k, v in flat.items():
        if k.rsplit(".", 1)[0] in sparse_names:
            continue
        out[k] = int(v.item()) if v.dim() == 0 and not v.is_floating_point() else v
    return out


def flatten_outputs(name: str, value: Any) -> Dict[str, torch.Tensor]:
    """SparseTensor -> name.coords / name.feats; list of Gaussians -> name.i.attr; tuples by index."""
    if isinstance(value, SparseTensor):
        return {f"{name}.coords": value.coords, f"{name}.feats": value.feats}
    if isinstance(value, torch.Tensor):
        return {name: value}
    if isinstance(value, (list, tuple)):
        out = {}
        for i, v in enumerate(value):
            out.update(flatten_outputs(f"{name}.{i}", v))
        return out
    if hasattr(value, "_xyz"):  # a Gaussian
        return {f"{name}.{a}": getattr(value, a) for a in GAUSSIAN_ATTRS if hasattr(value, a)}
    raise TypeError(f"cannot flatten output {name!r} of type {type(value).__name__}")


# ---------------------------------------------------------------------------- runners
Runner = Callable[[nn.Module, Dict[str, Any]], Dict[str, torch.Tensor]]
RUNNERS: Dict[str, Runner] = {}


def register_runner(*class_names: str):
    def deco(fn: Runner) -> Runner:
        for n in class_names:
            RUNNERS[n] = fn
        return fn
    return deco


@register_runner("SparseStructureEncoder", "SLatEncoder")
def _run_encoder(model, inputs):
    kwargs = {k: v for k, v in inputs.items() if k != "x"}
    z, mean, logvar = model(inputs["x"], sample_posterior=False, return_raw=True, **kwargs)
    return {**flatten_outputs("z", z), "mean": mean, "logvar": logvar}


@register_runner("SparseStructureDecoder")
def _run_ss_decoder(model, inputs):
    return {"logits": model(inputs["x"])}


@register_runner("SparseStructureFlowModel", "SLatFlowModel")
def _run_flow(model, inputs):
    kwargs = {k: v for k, v in inputs.items() if k not in ("x", "t", "cond")}
    return flatten_outputs("v", model(inputs["x"], inputs["t"], inputs["cond"], **kwargs))


@register_runner("SLatGaussianDecoder")
def _run_gs_decoder(model, inputs):
    kwargs = {k: v for k, v in inputs.items() if k != "x"}
    return flatten_outputs("gaussians", model(inputs["x"], **kwargs))


@register_runner("SLatRadianceFieldDecoder", "SLatMeshDecoder")
def _run_raw_decoder(model, inputs):
    return flatten_outputs("raw", model(inputs["x"]))


def runner_for(class_name: str) -> Runner:
    base = class_name[len(ELASTIC_PREFIX):] if class_name.startswith(ELASTIC_PREFIX) else class_name
    for name in (class_name, base):
        if name in RUNNERS:
            return RUNNERS[name]
    raise KeyError(f"no fixture runner for class {class_name!r}; registered: {sorted(RUNNERS)}")


# ---------------------------------------------------------------------------- hooks / comparison
def capture_intermediates(model: nn.Module, names: List[str]):
    """Forward hooks storing flattened outputs of the named sub-modules. Returns (store, handles)."""
    store: Dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = []
    for name in names:
        if name not in modules:
            raise KeyError(f"model has no sub-module {name!r} (needed for intermediates)")

        def hook(_m, _inp, out, _name=name):
            store.update(flatten_outputs(_name, out))
        handles.append(modules[name].register_forward_hook(hook))
    return store, handles


def intermediate_module_names(keys) -> List[str]:
    names = set()
    for k in keys:
        head, _, tail = k.rpartition(".")
        names.add(head if tail in SPARSE_PARTS and head else k)
    return sorted(names)


def compare_tensors(got: Dict[str, torch.Tensor], want: Dict[str, torch.Tensor], atol: float, rtol: float,
                    what: str = "") -> List[str]:
    """Mismatch descriptions (empty when everything matches). Integer tensors must match exactly."""
    problems = []
    for k, w in want.items():
        if k not in got:
            problems.append(f"{what}{k}: not produced")
            continue
        g = got[k].detach().cpu()
        if tuple(g.shape) != tuple(w.shape):
            problems.append(f"{what}{k}: shape {list(g.shape)} vs reference {list(w.shape)}")
            continue
        if not w.is_floating_point():
            if not torch.equal(g.to(w.dtype), w):
                problems.append(f"{what}{k}: integer values differ ({int((g.to(w.dtype) != w).sum())} entries)")
            continue
        g = g.to(w.dtype)
        if not torch.allclose(g, w, atol=atol, rtol=rtol):
            err = (g - w).abs().max().item()
            problems.append(f"{what}{k}: max |diff| {err:.3g} > atol {atol} + rtol {rtol}·|ref|")
    return problems


def run_case(model: nn.Module, class_name: str, case: Path, atol: float = 1e-4, rtol: float = 1e-4,
             with_intermediates: bool = True) -> List[str]:
    """Run one case folder; return the list of mismatches against outputs (and intermediates)."""
    from safetensors.torch import load_file

    inputs = assemble_inputs(load_file(str(case / INPUTS)))
    want = load_file(str(case / OUTPUTS))
    inter_file = case / INTERMEDIATES
    inter_want = load_file(str(inter_file)) if with_intermediates and inter_file.is_file() else {}
    store, handles = capture_intermediates(model, intermediate_module_names(inter_want)) if inter_want else ({}, [])
    try:
        with torch.no_grad():
            got = runner_for(class_name)(model, inputs)
    finally:
        for h in handles:
            h.remove()
    problems = compare_tensors(got, want, atol, rtol, what="output ")
    problems += compare_tensors(store, inter_want, atol, rtol, what="intermediate ")
    return problems
