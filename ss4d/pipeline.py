"""``ss4d.Pipeline``: video frames -> one set of 3D Gaussians per frame (SS4D's
``TrellisVideoTo4DPipeline``, mirroring :class:`trellis_ext.pipelines.ImageTo3DPipeline`).

Order of a run (the official one, so ``seed=42`` reproduces the reference run draw for draw):

1. preprocess (:mod:`ss4d.preprocess`; RGB frames are matted first, :mod:`ss4d.matting`);
2. condition: ``cond = layer_norm(encoder(frames))`` [T, L, C], ``neg_cond = 0``;
3. ``torch.manual_seed(seed)`` *after* conditioning;
4. sparse structure: noise ``randn(T, 8, r, r, r)`` (independent per frame, drawn on the CPU) ->
   flow Euler (CFG, guidance interval, ``rescale_t``; ``num_frames = T``) -> SS decoder per frame ->
   voxels with logit > 0 -> coords ``[N, 4] = (t, x, y, z)``;
5. structured latent: noise ``randn(N, 8)`` (next draws of the same CPU stream) on those voxels ->
   flow Euler -> de-normalise (``· std + mean``);
6. decode: the 4D Gaussian decoder -> T ``Gaussian`` objects.

T must be even (the SLat flow packs frame pairs) and >= 2.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

import ss4d.models  # noqa: F401  (registers the 4D classes with trellis_ext's registry)
from trellis_ext.atomic import apply_umask, atomic_directory, merged_directory
from trellis_ext.models.checkpoint import CheckpointError, load_config, save_pretrained
from trellis_ext.pipelines.base import (PIPELINE_JSON, PipelineLoadError, build_sampler, load_models,
                                        read_pipeline_json)
from trellis_ext.pipelines.samplers import SOLVERS, SamplerOutput, heun_counterpart
from trellis_ext.sparse import SparseTensor

from .compile_flow import COMPILE_TARGETS, DEFAULT_BACKEND, CompileStatus, compile_forward, uncompile_forward
from .conditioning.dinov2 import DINOV2_NAME
from .conditioning.resolve import ENCODER_DIR, ENCODER_FILE, load_condition_encoder
from .errors import GenerationError, InputError, ModelFolderError
from .frames import unfold_sparse_coords
from .models.ss_vae_4d import DEFAULT_CHUNK_FRAMES, decode_frames, occupied_coords
from .offload import LOW_VRAM_DECODE_CHUNK, LOW_VRAM_SAMPLER_PARAMS, StageOffload
from .time_chunks import TimeChunkedFlow, chunk_ranges, decode_in_chunks

__all__ = ["Pipeline", "PipelineResult", "PIPELINE_NAME", "REQUIRED_MODELS", "DTYPES", "resolve_dtype",
           "WEIGHTS_HINT", "STAGES", "missing_model_error"]

PIPELINE_NAME = "TrellisVideoTo4DPipeline"
REQUIRED_MODELS = ("sparse_structure_flow_model", "sparse_structure_decoder", "slat_flow_model", "slat_decoder_gs")
EXPECTED_CLASSES = {
    "sparse_structure_flow_model": "SparseStructureFlow4DModel",
    "sparse_structure_decoder": "SparseStructureDecoder",
    "slat_flow_model": "SLatFlow4DModel",
    "slat_decoder_gs": "SLatGaussianDecoder4D",
}
#: The "no temporal layers" baseline: TRELLIS's 3D model of a stage applied per frame (``ss4d.models.per_frame``).
PER_FRAME_CLASSES = {
    "sparse_structure_flow_model": "SparseStructureFlowPerFrame",
    "slat_flow_model": "SLatFlowPerFrame",
    "slat_decoder_gs": "SLatGaussianDecoderPerFrame",
}
#: The Gaussian tensors a decoder fills (kept float32, checked for NaN/inf).
GAUSSIAN_FIELDS = ("_xyz", "_features_dc", "_scaling", "_rotation", "_opacity")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: Timing keys of :attr:`PipelineResult.timings` (plus ``total``).
STAGES = ("preprocess", "condition", "sparse_structure", "slat", "decode")
WEIGHTS_HINT = ("download the SS4D weights (lizb6626/SS4D on the Hugging Face hub) into a local folder and pass "
                "it with --model; checkpoints/README.md shows the layout")
#: "owner/name": what a Hugging Face hub id looks like (when no such local path exists).
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: Top-level key of pipeline.json where ss4d keeps its own notes (TRELLIS's loader ignores it).
META_KEY = "ss4d"
#: Largest seed accepted (torch generators take a signed 64-bit seed on every device).
MAX_SEED = 2 ** 63 - 1
#: Devices a pipeline can run on.
DEVICE_TYPES = ("cpu", "cuda")
#: Weight tensors named in a non-finite-weights error (the rest are counted).
LISTED_TENSORS = 3


def _nonfinite_names(tensors) -> List[str]:
    return [name for name, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def check_finite_weights(models: Dict[str, nn.Module], path: str) -> None:
    """One pass over every floating-point parameter and buffer; NaN/inf -> :class:`ModelFolderError`."""
    for key, model in models.items():
        bad = _nonfinite_names(list(model.named_parameters()) + list(model.named_buffers()))
        if bad:
            more = f" and {len(bad) - LISTED_TENSORS} more" if len(bad) > LISTED_TENSORS else ""
            raise ModelFolderError(f"{path}: the weights of {key} hold NaN/inf values "
                                   f"({', '.join(bad[:LISTED_TENSORS])}{more}); the checkpoint is corrupt", WEIGHTS_HINT)


def nonfinite_error(stage: str, what: str, dtype: torch.dtype) -> GenerationError:
    """The error for a stage whose output holds NaN/inf, with the likely cause for this precision."""
    if dtype == torch.float16:
        hint = "fp16 can overflow: rerun with --dtype bf16 or --dtype fp32"
    else:
        hint = ("the model weights or the sampler settings (--cfg-ss/--cfg-slat) are the likely cause; check the "
                "model folder" + ("" if dtype == torch.float32 else ", or rerun with --dtype fp32"))
    return GenerationError(f"the {stage} stage produced NaN/inf values in {what}", hint)


def _require_finite(t: torch.Tensor, stage: str, what: str, dtype: torch.dtype) -> None:
    if not bool(torch.isfinite(t).all()):
        raise nonfinite_error(stage, what, dtype)


def parse_device(device: Union[str, torch.device]) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a torch device; anything else -> :class:`InputError`."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in DEVICE_TYPES:
        raise InputError(f"unsupported device {device!r}", f"use one of {', '.join(DEVICE_TYPES)} (e.g. 'cuda:0')")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("CUDA was requested but no CUDA device is available", "use --device cpu")
    return dev


def is_model_folder(path: Union[str, os.PathLike]) -> bool:
    """``path`` holds a TRELLIS/SS4D ``pipeline.json`` with a pipeline name."""
    try:
        return isinstance(read_pipeline_json(os.fspath(path)).get("name"), str)
    except (PipelineLoadError, OSError, ValueError):
        return False


def missing_model_error(path: str, source: str = "", extra_hint: str = "") -> ModelFolderError:
    """The error for a model path that does not exist; something like a hub id ("owner/name" whose
    owner is no local folder) gets download instructions. ``source`` says where the path came from."""
    label = f"{path} ({source})" if source else path
    if HUB_ID.match(path) and not os.path.isdir(path.split("/")[0]):
        return ModelFolderError(f"{label} is not a local folder (it looks like a Hugging Face hub id; ss4d never "
                                f"downloads)", f"download it first, e.g. huggingface-cli download {path} --local-dir "
                                f"checkpoints/SS4D, then pass that folder; see checkpoints/README.md{extra_hint}")
    return ModelFolderError(f"model folder not found: {label}", WEIGHTS_HINT + extra_hint)


def resolve_dtype(dtype: Union[None, str, torch.dtype], device: Union[str, torch.device]) -> torch.dtype:
    """``None``/"auto" -> fp16 on CUDA (the released configs' ``use_fp16``), fp32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}", f"use one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class PipelineResult:
    """What :meth:`Pipeline.run` returns.

    Attributes:
        gaussians: one :class:`~trellis_ext.representations.Gaussian` per frame.
        coords: per frame, the occupied voxels ``[N_t, 3]`` int32 (x, y, z) on the structure grid.
        images: the preprocessed frames (518² premultiplied RGB PIL images) the model saw.
        timings: seconds per stage (:data:`STAGES`) and ``total``.
        seed: the seed set after conditioning (None: the global RNG state was used as is).
        resolution: the structure grid size (64 for the released models).
        cond: conditioning tokens [T, L, C].
        slat: the de-normalised structured latent (folded coords ``(t, x, y, z)``).
        ss / slat_trajectory: sampler outputs (per-step tensors only with ``keep_trajectory``).
        params: the sampler parameters used for each stage.
        extras: ``ss_decoder_logits`` (with ``keep_trajectory``), ``crop_box``.
    """

    gaussians: List[Any]
    coords: List[torch.Tensor]
    images: List[Any]
    timings: Dict[str, float]
    seed: Optional[int]
    resolution: int
    cond: torch.Tensor
    slat: SparseTensor
    ss: SamplerOutput
    slat_trajectory: SamplerOutput
    params: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    extras: Dict[str, Any] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return len(self.gaussians)

    @property
    def voxels_per_frame(self) -> List[int]:
        return [int(c.shape[0]) for c in self.coords]


class Pipeline:
    """SS4D video-to-4D pipeline. Build it with :meth:`from_pretrained`; see the module docstring."""

    def __init__(self, models: Dict[str, nn.Module], ss_sampler, ss_params: Dict[str, Any], slat_sampler,
                 slat_params: Dict[str, Any], slat_normalization: Dict[str, List[float]], image_cond_model: nn.Module,
                 config: Optional[Dict[str, Any]] = None, model_names: Optional[Dict[str, str]] = None,
                 source: Optional[str] = None):
        self.models = models
        self.ss_sampler, self.ss_params = ss_sampler, dict(ss_params)
        self.slat_sampler, self.slat_params = slat_sampler, dict(slat_params)
        self.slat_normalization = {"mean": list(slat_normalization["mean"]), "std": list(slat_normalization["std"])}
        self.slat_mean = torch.tensor(self.slat_normalization["mean"], dtype=torch.float32)
        self.slat_std = torch.tensor(self.slat_normalization["std"], dtype=torch.float32)
        self.image_cond_model = image_cond_model
        self.config = config or {"name": PIPELINE_NAME, "args": {}}
        self.model_names = model_names or {k: type(m).__name__ for k, m in models.items()}
        self.source = source
        self._dtype = torch.float32
        self.offload: Optional[StageOffload] = None
        #: :class:`ss4d.compile_flow.CompileStatus` of each compiled model (:meth:`enable_compile`)
        self.compiled: Dict[str, CompileStatus] = {}
        #: FP8 layers converted per model (:meth:`enable_fp8`; empty: none)
        self.fp8_layers: Dict[str, int] = {}
        self._check_compatible()

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike, None] = None, device: Union[str, torch.device, None] = None,
                        dtype: Union[str, torch.dtype, None] = None,
                        image_cond_model: Union[None, str, os.PathLike, nn.Module] = None) -> "Pipeline":
        """Load an official SS4D folder or one written by :meth:`save_pretrained` (local only).

        Args:
            path: folder with ``pipeline.json`` (``"name": "TrellisVideoTo4DPipeline"``) and ``ckpts/``;
                None: ``$SS4D_MODEL``, the official ``checkpoints/SS4D`` when present, else the small model
                shipped in ``checkpoints/ss4d-small`` (:mod:`ss4d.default_model`).
            device: where to run (default CPU).
            dtype: torso precision ``"fp32" | "fp16" | "bf16"`` or a torch dtype; default fp16 on CUDA,
                fp32 on CPU.
            image_cond_model: the condition encoder (path or module); default: found next to the
                folder (see :mod:`ss4d.conditioning.resolve`).
        Raises:
            ModelFolderError: missing folder, not an SS4D folder, missing/broken checkpoint, no encoder.
        """
        if path is None:
            from .default_model import resolve_model

            path, _ = resolve_model()
        path = os.fspath(path)
        if not os.path.exists(path):
            raise missing_model_error(path)
        if not os.path.isdir(path):
            raise ModelFolderError(f"--model {path} is a file, not a model folder", WEIGHTS_HINT)
        try:
            config = read_pipeline_json(path)
        except PipelineLoadError as e:
            raise ModelFolderError(f"{path} is not an SS4D model folder ({e})", WEIGHTS_HINT) from None
        if config.get("name") != PIPELINE_NAME:
            raise ModelFolderError(f"{path} holds a {config.get('name')!r} pipeline, not SS4D's {PIPELINE_NAME!r}",
                                   WEIGHTS_HINT)
        args = config["args"]
        source = os.path.join(path, PIPELINE_JSON)
        missing = [k for k in REQUIRED_MODELS if k not in args["models"]]
        if missing:
            raise ModelFolderError(f"{source} lists no model for {', '.join(missing)}", WEIGHTS_HINT)
        for key in ("sparse_structure_sampler", "slat_sampler", "slat_normalization"):
            if key not in args:
                raise ModelFolderError(f"{source} has no {key!r} entry", WEIGHTS_HINT)
        wanted = {k: args["models"][k] for k in REQUIRED_MODELS}
        try:
            names = {k: load_config(os.path.join(path, stem))["name"] for k, stem in wanted.items()}
            models = load_models(path, wanted, REQUIRED_MODELS)
            ss_sampler, ss_params = build_sampler(args["sparse_structure_sampler"], source)
            slat_sampler, slat_params = build_sampler(args["slat_sampler"], source)
        except (PipelineLoadError, CheckpointError) as e:
            raise ModelFolderError(f"cannot load {path}: {e}", WEIGHTS_HINT) from None
        for key, expected in EXPECTED_CLASSES.items():
            got = type(models[key]).__name__
            if got not in (expected, PER_FRAME_CLASSES.get(key)):
                raise ModelFolderError(f"{path}: {wanted[key]} is a {got}, but SS4D needs a {expected} there "
                                       f"(is this a TRELLIS 3D folder?)", WEIGHTS_HINT)
        encoder, _ = load_condition_encoder(path, args.get("image_cond_model"), image_cond_model)
        check_finite_weights({**models, "the condition encoder": encoder}, path)
        pipe = cls(models, ss_sampler, ss_params, slat_sampler, slat_params, args["slat_normalization"], encoder,
                   config=config, model_names=names, source=path)
        device = parse_device(device) if device is not None else torch.device("cpu")
        return pipe.to(device, resolve_dtype(dtype, device))

    def _check_compatible(self) -> None:
        flow = self.models["sparse_structure_flow_model"]
        slat = self.models["slat_flow_model"]
        c = getattr(self.image_cond_model, "channels", None)
        for key, model in (("sparse_structure_flow_model", flow), ("slat_flow_model", slat)):
            want = getattr(model, "cond_channels", None)
            if c is not None and want is not None and int(want) != int(c):
                raise ModelFolderError(f"the condition encoder gives {c}-channel tokens but {key} expects {want}",
                                       "pair the folder with its own encoder (see checkpoints/README.md)")

    @property
    def random_weights(self) -> bool:
        """True for the tiny random-weight pipelines written by :mod:`ss4d.tiny`."""
        return bool(self.config.get(META_KEY, {}).get("random_weights", False))

    def save_pretrained(self, path: Union[str, os.PathLike], include_image_cond_model: bool = True,
                        overwrite: bool = False) -> str:
        """Write ``pipeline.json`` + ``ckpts/`` (+ the condition encoder) to ``path``.

        ``from_pretrained(path)`` gives back the same pipeline (same weights, samplers,
        normalisation and encoder).

        A new or empty ``path`` is written atomically. An existing model folder (one with a
        ``pipeline.json``) gets its model files replaced one by one, each atomically; any other
        non-empty folder is refused unless ``overwrite=True``. Files that are not written here are
        never removed (so an old encoder file stays when ``include_image_cond_model=False``).

        Raises:
            InputError: ``path`` is a file, or a non-empty folder that is not a model folder and
                ``overwrite`` is False.
        """
        path = Path(os.fspath(path)).absolute()
        if path.exists() and not path.is_dir():
            raise InputError(f"cannot save the pipeline to {path}: it is a file", "give a folder path")
        existing = path.is_dir() and any(path.iterdir())
        if existing and not overwrite and not is_model_folder(path):
            raise InputError(f"cannot save the pipeline to {path}: the folder is not empty and holds no "
                             f"{PIPELINE_JSON}", "choose a new folder, or pass overwrite=True to add the model "
                             "files there (nothing else in it is removed)")
        writer = merged_directory if existing else atomic_directory
        with writer(str(path), prefix=f".{path.name}.tmp-") as tmp_dir:
            tmp = Path(tmp_dir)
            stems = dict(self.config.get("args", {}).get("models", {}))
            entries = {}
            for key in REQUIRED_MODELS:
                stem = stems.get(key, f"ckpts/{key}")
                save_pretrained(self.models[key], str(tmp / stem), name=self.model_names[key])
                entries[key] = stem
            args = dict(self.config.get("args", {}))
            args["models"] = entries
            args["sparse_structure_sampler"] = self._sampler_spec(self.ss_sampler, self.ss_params,
                                                                  args.get("sparse_structure_sampler"))
            args["slat_sampler"] = self._sampler_spec(self.slat_sampler, self.slat_params, args.get("slat_sampler"))
            args["slat_normalization"] = self.slat_normalization
            args.setdefault("image_cond_model", DINOV2_NAME)
            enc = self.image_cond_model
            if include_image_cond_model:
                if hasattr(enc, "save"):
                    enc.save(tmp / ENCODER_FILE)
                elif hasattr(enc, "model") and hasattr(enc.model, "save_pretrained"):
                    enc.model.save_pretrained(str(tmp / ENCODER_DIR))
                    apply_umask(tmp / ENCODER_DIR)  # its safetensors file is created 0600
            config = {k: v for k, v in self.config.items() if k != "args"}
            config["name"] = PIPELINE_NAME
            config["args"] = args
            with open(tmp / PIPELINE_JSON, "w", encoding="utf-8") as f:
                json.dump(config, f, indent=4)
        return str(path)

    @staticmethod
    def _sampler_spec(sampler, params: Dict[str, Any], previous: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        spec = {"name": type(sampler).__name__, "args": {"sigma_min": sampler.sigma_min}}
        if previous and previous.get("name") == spec["name"]:
            spec["args"] = dict(previous.get("args", spec["args"]))
        spec["params"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}
        return spec

    # ------------------------------------------------------------------ device / dtype
    @property
    def device(self) -> torch.device:
        """Where the stages compute (in low-VRAM mode the models wait on the CPU in between)."""
        if self.offload is not None:
            return self.offload.device
        return next(self.models["sparse_structure_flow_model"].parameters()).device

    @property
    def low_vram(self) -> bool:
        return self.offload is not None

    def enable_low_vram(self, device: Union[str, torch.device, None] = None) -> "Pipeline":
        """Keep the models on the CPU and move each to ``device`` (default: the current device) only
        while its stage runs; sequential CFG; the structure decoder one frame at a time
        (:mod:`ss4d.offload`). Same output as the default mode."""
        device = parse_device(device) if device is not None else self.device
        self.offload = StageOffload(device)
        self.offload.park(*self.models.values(), self.image_cond_model)
        self._recompile()
        return self

    def enable_compile(self, backend: str = DEFAULT_BACKEND) -> Dict[str, CompileStatus]:
        """``torch.compile`` the dense structure-flow trunk (:mod:`ss4d.compile_flow`): CUDA graphs
        (``mode="reduce-overhead"``) on CUDA unless in low-VRAM mode, plain compilation elsewhere.
        When compilation is unavailable here, one warning says why and the flow stays eager (the
        statuses returned, also in :attr:`compiled`, say what happened). Same numbers within float
        tolerance."""
        cuda_graphs = not self.low_vram
        self.compiled = {key: compile_forward(self.models[key], self.device, backend, cuda_graphs=cuda_graphs)
                         for key in COMPILE_TARGETS}
        return self.compiled

    def enable_fp8(self) -> Dict[str, int]:
        """FP8 matmuls in the flow trunks' linear layers (:mod:`ss4d.fp8`; torchao, CUDA compute
        capability >= 8.9). Call after :meth:`to` (bf16 torsos). Returns the converted layer count per
        model.

        Raises:
            InputError: no such GPU here, or torchao not installed (the message names what is missing).
        """
        from .fp8 import apply_fp8

        self.fp8_layers = apply_fp8(self.models, self.device)
        return self.fp8_layers

    def disable_compile(self) -> "Pipeline":
        """Back to the eager forwards."""
        for key in self.compiled:
            uncompile_forward(self.models[key])
        self.compiled = {}
        return self

    def _recompile(self) -> None:
        """After a mode change (low VRAM on/off), compile again with the mode that fits it."""
        active = {s.backend for s in self.compiled.values() if s.active}
        if active:
            self.enable_compile(active.pop())

    def disable_low_vram(self) -> "Pipeline":
        """Back to every model resident on the compute device."""
        device, self.offload = self.device, None
        self.to(device)
        self._recompile()
        return self

    def _on_device(self, *modules: nn.Module):
        """The stage's ``modules`` on the compute device (a no-op unless in low-VRAM mode)."""
        from contextlib import nullcontext

        return self.offload.stage(*modules) if self.offload is not None else nullcontext()

    def _sampler_params(self, params: Dict[str, Any]) -> Dict[str, Any]:
        return {**params, **LOW_VRAM_SAMPLER_PARAMS} if self.offload is not None else params

    @staticmethod
    def _solver_sampler(sampler, params: Dict[str, Any]):
        """(sampler, params without ``solver``): ``solver="heun"`` swaps in the Heun counterpart of
        the folder's Euler sampler (same velocity rule, :mod:`trellis_ext.pipelines.samplers.flow_heun`);
        ``"euler"`` or none keeps the folder's sampler."""
        params = dict(params)
        solver = params.pop("solver", None)
        return (heun_counterpart(sampler) if solver == "heun" else sampler), params

    @property
    def dtype(self) -> torch.dtype:
        """Precision of the model torsos (norms, embedders and the encoder stay fp32)."""
        return self._dtype

    def to(self, device: Union[str, torch.device, None] = None,
           dtype: Union[str, torch.dtype, None] = None) -> "Pipeline":
        """Move every model (and the encoder) to ``device``; cast the torsos to ``dtype``."""
        device = parse_device(device) if device is not None else self.device
        if self.offload is not None:
            self.offload.device = device   # the models stay parked on the CPU
        else:
            for model in self.models.values():
                model.to(device)
            self.image_cond_model.to(device)
        if dtype is not None:
            dtype = resolve_dtype(dtype, device)
            for model in self.models.values():
                if hasattr(model, "convert_torso"):
                    model.convert_torso(dtype)
            self._dtype = dtype
        return self

    def cuda(self) -> "Pipeline":
        return self.to("cuda")

    def cpu(self) -> "Pipeline":
        return self.to("cpu")

    # ------------------------------------------------------------------ stages
    def preprocess(self, frames: Sequence[Any], matting: str = "auto", mask_dir=None):
        """RGBA (or RGB, matted with ``matting``) frames -> (518² RGB PIL images, crop box)."""
        from .matting import matte_frames
        from .preprocess import preprocess_frames, to_rgba_arrays

        rgba, _ = matte_frames(to_rgba_arrays(frames), matting, mask_dir=mask_dir)
        return preprocess_frames(rgba)

    @torch.no_grad()
    def encode_frames(self, images: Sequence[Any]) -> torch.Tensor:
        """Preprocessed RGB frames (PIL / uint8 arrays) -> conditioning tokens [T, L, C] (fp32)."""
        x = torch.stack([torch.from_numpy(np.asarray(im.convert("RGB") if hasattr(im, "convert") else im)
                                          .astype(np.float32) / 255).permute(2, 0, 1) for im in images])
        with self._on_device(self.image_cond_model):
            return self.image_cond_model.encode(x.to(self.device)).float()

    def _stage_params(self, defaults: Dict[str, Any], steps: Optional[int], cfg: Optional[float],
                      extra: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        p = {**defaults, **(extra or {})}
        if steps is not None:
            if int(steps) < 1:
                raise InputError(f"steps must be >= 1, got {steps}", "e.g. 25 (the released setting) or fewer for speed")
            p["steps"] = int(steps)
        if cfg is not None:
            if not (math.isfinite(cfg) and cfg >= 0):
                raise InputError(f"cfg strength must be a finite number >= 0, got {cfg}",
                                 "0 disables guidance; 3-7.5 is typical")
            p["cfg_strength"] = float(cfg)
        if p.get("solver", SOLVERS[0]) not in SOLVERS:
            raise InputError(f"unknown solver {p['solver']!r}", f"use one of {', '.join(SOLVERS)}")
        return p

    @torch.no_grad()
    def sample_sparse_structure(self, cond: torch.Tensor, neg_cond: torch.Tensor, noise: torch.Tensor,
                                progress: bool = False, keep_trajectory: bool = False, **params):
        """noise [T, C, r, r, r] -> (coords [N, 4] (t, x, y, z) int32, sampler output, logits [T, 1, R, R, R])."""
        num_frames = noise.shape[0]
        flow, decoder = self.models["sparse_structure_flow_model"], self.models["sparse_structure_decoder"]
        sampler, params = self._solver_sampler(self.ss_sampler, params)
        with self._on_device(flow):
            out = sampler.sample(flow, noise, cond, neg_cond=neg_cond, num_frames=num_frames, verbose=progress,
                                 desc="Sparse structure", keep_trajectory=keep_trajectory,
                                 **self._sampler_params(params))
        chunk = LOW_VRAM_DECODE_CHUNK if self.low_vram else DEFAULT_CHUNK_FRAMES
        with self._on_device(decoder):
            logits = decode_frames(decoder, out.samples[None], chunk_size=chunk)[0]
        return occupied_coords(logits), out, logits

    @torch.no_grad()
    def sample_slat(self, cond: torch.Tensor, neg_cond: torch.Tensor, noise: SparseTensor, num_frames: int,
                    progress: bool = False, keep_trajectory: bool = False, **params):
        """noise on the voxels -> (de-normalised SparseTensor, sampler output).

        ``params`` may hold ``time_chunk`` (and ``time_overlap``, default 0): evaluate the flow on
        overlapping chunks of that many frames, blended (:mod:`ss4d.time_chunks`; long clips)."""
        flow = self.models["slat_flow_model"]
        sampler, params = self._solver_sampler(self.slat_sampler, params)
        chunk, overlap = params.pop("time_chunk", None), params.pop("time_overlap", 0)
        model = TimeChunkedFlow(flow, int(chunk), int(overlap)) if chunk else flow
        with self._on_device(flow):
            out = sampler.sample(model, noise, cond, neg_cond=neg_cond, num_frames=num_frames,
                                 verbose=progress, desc="Structured latent",
                                 keep_trajectory=keep_trajectory, **self._sampler_params(params))
        feats = out.samples.feats.float()
        std = self.slat_std.to(feats.device)
        mean = self.slat_mean.to(feats.device)
        return out.samples.replace(feats * std[None] + mean[None]), out

    @torch.no_grad()
    def decode_slat(self, slat: SparseTensor, num_frames: int, time_chunk: Optional[int] = None,
                    time_overlap: int = 0, frames: Optional[Sequence[int]] = None) -> List[Any]:
        """The 4D Gaussian decoder -> one float32 ``Gaussian`` per frame (per listed frame with
        ``frames``). ``time_chunk``: decode overlapping chunks of that many frames, blended
        (:func:`ss4d.time_chunks.decode_in_chunks`); with ``frames`` only the chunks holding those
        frames are decoded (less work). Without chunks the whole clip is decoded (the decoder's 4D
        windows make every frame depend on its neighbours) and the listed frames returned."""
        decoder = self.models["slat_decoder_gs"]
        with self._on_device(decoder):
            if time_chunk:
                gaussians = decode_in_chunks(decoder, slat, num_frames, int(time_chunk), int(time_overlap),
                                             GAUSSIAN_FIELDS, frames=frames)
            else:
                gaussians = decoder(slat, num_frames=num_frames)
                if frames is not None:
                    gaussians = [gaussians[int(f)] for f in frames]
        for g in gaussians:  # fp16/bf16 torsos: keep the Gaussians in float32
            for name in GAUSSIAN_FIELDS:
                v = getattr(g, name, None)
                if v is not None and v.dtype != torch.float32:
                    setattr(g, name, v.float())
        return gaussians

    # ------------------------------------------------------------------ run
    @torch.no_grad()
    def run(self, frames: Sequence[Any], seed: Optional[int] = 42, num_steps: Optional[int] = None,
            ss_steps: Optional[int] = None, slat_steps: Optional[int] = None, ss_cfg: Optional[float] = None,
            slat_cfg: Optional[float] = None, sparse_structure_sampler_params: Optional[Dict[str, Any]] = None,
            slat_sampler_params: Optional[Dict[str, Any]] = None, preprocess_image: bool = True,
            matting: str = "auto", mask_dir=None, progress: bool = True, keep_trajectory: bool = False,
            ss_noise: Optional[torch.Tensor] = None, slat_noise: Optional[torch.Tensor] = None,
            time_chunk: Optional[int] = None, time_overlap: int = 0) -> PipelineResult:
        """Generate one Gaussian set per frame.

        Args:
            frames: T frames (PIL images or uint8 ``[H, W, 3|4]`` arrays); RGBA as the official pipeline
                wants, or RGB (matted with ``matting``/``mask_dir``, see :mod:`ss4d.matting`). T even, >= 2.
            seed: ``torch.manual_seed(seed)`` right after conditioning (None: leave the RNG alone).
            num_steps: sampler steps of both stages; ``ss_steps`` / ``slat_steps`` per stage.
            ss_cfg / slat_cfg: classifier-free guidance strengths.
            sparse_structure_sampler_params / slat_sampler_params: any other sampler parameters
                (``cfg_interval``, ``rescale_t``), as in the official ``run``, and the speed options
                ``cfg_mode="batched"``, ``kv_cache=True``, ``solver="heun"`` (the Heun counterpart of
                the folder's Euler sampler; :mod:`ss4d.presets` names the combinations).
            preprocess_image: False when ``frames`` are already SS4D-preprocessed 518² RGB images.
            progress: tqdm bars per sampling stage.
            keep_trajectory: keep every step's tensors and the decoder logits (memory heavy).
            ss_noise / slat_noise: noise to use instead of drawing it ([T, C, r, r, r] / [N, C]).
            time_chunk / time_overlap: run the SLat flow and the 4D decoder on overlapping chunks of
                ``time_chunk`` frames (even; overlap even, < chunk), blended (:mod:`ss4d.time_chunks`):
                memory for long clips; the same result when the clip is no longer than a chunk.
        """
        t_start = time.perf_counter()
        device = self.device
        timings: Dict[str, float] = {}
        frames = list(frames)
        if seed is not None and not (isinstance(seed, int) and 0 <= seed <= MAX_SEED):
            raise InputError(f"seed must be an integer between 0 and {MAX_SEED}, got {seed!r}", "e.g. seed=42")
        if len(frames) < 2 or len(frames) % 2:
            raise InputError(f"SS4D needs an even number of frames (>= 2), got {len(frames)}",
                             "drop or add one frame (the SLat flow packs frames in pairs)")
        ss_p = self._stage_params(self.ss_params, ss_steps if ss_steps is not None else num_steps, ss_cfg,
                                  sparse_structure_sampler_params)   # checked before any work
        slat_p = self._stage_params(self.slat_params, slat_steps if slat_steps is not None else num_steps, slat_cfg,
                                    slat_sampler_params)
        ss_p, slat_p = self._sampler_params(ss_p), self._sampler_params(slat_p)   # as run (low-VRAM settings)
        if time_chunk:
            chunk_ranges(len(frames), int(time_chunk), int(time_overlap))   # checked before any work
            slat_p.update(time_chunk=int(time_chunk), time_overlap=int(time_overlap))

        t0 = time.perf_counter()
        crop = None
        if preprocess_image:
            images, crop = self.preprocess(frames, matting=matting, mask_dir=mask_dir)
        else:
            from PIL import Image

            images = [im if hasattr(im, "convert") else Image.fromarray(np.asarray(im)) for im in frames]
        timings["preprocess"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        cond = self.encode_frames(images)
        _require_finite(cond, "condition", "the frame features (condition encoder)", self.dtype)
        neg_cond = torch.zeros_like(cond)
        _sync(device)
        timings["condition"] = time.perf_counter() - t0

        if seed is not None:
            torch.manual_seed(seed)
        num_frames = len(images)

        t0 = time.perf_counter()
        flow = self.models["sparse_structure_flow_model"]
        if ss_noise is None:
            r = flow.resolution
            ss_noise = torch.randn(num_frames, flow.in_channels, r, r, r)
        coords, ss_out, logits = self.sample_sparse_structure(cond, neg_cond, ss_noise.to(device), progress=progress,
                                                              keep_trajectory=keep_trajectory, **ss_p)
        _require_finite(ss_out.samples, "sparse-structure", "the structure latents", self.dtype)
        _require_finite(logits, "sparse-structure", "the occupancy logits (structure decoder)", self.dtype)
        resolution = int(logits.shape[-1])
        counts = torch.bincount(coords[:, 0].long(), minlength=num_frames)
        empty = [int(t) for t in torch.nonzero(counts == 0).flatten()]
        if empty:
            raise GenerationError(f"the sparse structure of frame(s) {empty} is empty (no voxel has an occupancy "
                                  f"logit > 0)", "try another --seed or check that the object is visible")
        _sync(device)
        timings["sparse_structure"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        slat_flow = self.models["slat_flow_model"]
        if slat_noise is None:
            slat_noise = torch.randn(coords.shape[0], slat_flow.in_channels)
        noise = SparseTensor(slat_noise.to(device), coords.to(device))
        slat, slat_out = self.sample_slat(cond, neg_cond, noise, num_frames, progress=progress,
                                          keep_trajectory=keep_trajectory, **slat_p)
        _require_finite(slat.feats, "structured-latent", "the structured latents", self.dtype)
        _sync(device)
        timings["slat"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        gaussians = self.decode_slat(slat, num_frames, time_chunk=time_chunk, time_overlap=time_overlap)
        for t, g in enumerate(gaussians):
            for name in GAUSSIAN_FIELDS:
                if getattr(g, name, None) is not None:
                    _require_finite(getattr(g, name), "decode", f"the Gaussians of frame {t} ({name})", self.dtype)
        _sync(device)
        timings["decode"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - t_start

        coords_cpu = coords.cpu()
        per_frame = unfold_sparse_coords(coords_cpu, num_frames)
        extras: Dict[str, Any] = {"crop_box": crop}
        if keep_trajectory:
            extras["ss_decoder_logits"] = logits
        return PipelineResult(gaussians=gaussians, coords=per_frame, images=images, timings=timings, seed=seed,
                              resolution=resolution, cond=cond, slat=slat, ss=ss_out, slat_trajectory=slat_out,
                              params={"sparse_structure": ss_p, "slat": slat_p}, extras=extras)
