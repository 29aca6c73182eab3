"""Less work per result (issue 13): each speed option equals the faithful default path.

* ``cfg_mode="batched"`` (one model call on cond + neg stacked) = sequential CFG, dense and sparse;
* outside the guidance interval the unconditional pass is skipped (model calls counted by hand);
* ``kv_cache=True`` (cross-attention k, v kept across steps) = recomputed, exactly, with to_kv
  evaluated once per distinct context instead of once per model call.
"""
import numpy as np
import pytest
import torch
from PIL import Image

from ss4d import Pipeline
from ss4d.perf import CallCounter
from ss4d.tiny import write_tiny_video_to_4d
from trellis_ext.sparse import SparseTensor

T = 2
#: Hand count for steps=4, rescale_t=1 (t = 1, .75, .5, .25), interval [0.5, 1]: guided at 3 of them.
STEPS, GUIDED_STEPS = 4, 3
PLAIN = {"steps": STEPS, "rescale_t": 1.0, "cfg_strength": 3.0, "cfg_interval": (0.5, 1.0)}
TOL = {"atol": 1e-5, "rtol": 1e-5}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The tiny pipeline, its conditioning of T random frames, structure noise and voxels."""
    pipe = Pipeline.from_pretrained(write_tiny_video_to_4d(str(tmp_path_factory.getbasetemp() / "tiny_ss4d")))
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (518, 518, 3), dtype=np.uint8)) for _ in range(T)]
    cond = pipe.encode_frames(images)
    flow = pipe.models["sparse_structure_flow_model"]
    r = flow.resolution
    ss_noise = torch.randn(T, flow.in_channels, r, r, r, generator=torch.Generator().manual_seed(1))
    coords, _, _ = pipe.sample_sparse_structure(cond, torch.zeros_like(cond), ss_noise, **{**pipe.ss_params, "steps": 1})
    slat_noise = torch.randn(coords.shape[0], pipe.models["slat_flow_model"].in_channels,
                             generator=torch.Generator().manual_seed(2))
    return pipe, cond, ss_noise, SparseTensor(slat_noise, coords)


def _sample(pipe, stage, cond, noise, **params):
    key = "sparse_structure_flow_model" if stage == "ss" else "slat_flow_model"
    sampler = pipe.ss_sampler if stage == "ss" else pipe.slat_sampler
    model = pipe.models[key]
    with CallCounter(model) as calls:
        out = sampler.sample(model, noise, cond, neg_cond=torch.zeros_like(cond), num_frames=T,
                             keep_trajectory=False, **{**PLAIN, **params})
    samples = out.samples.feats if isinstance(out.samples, SparseTensor) else out.samples
    return samples, calls.calls


@pytest.mark.parametrize("stage", ["ss", "slat"])
def test_unconditional_pass_is_skipped_outside_the_interval(setup, stage):
    pipe, cond, ss_noise, slat_noise = setup
    noise = ss_noise if stage == "ss" else slat_noise
    _, calls = _sample(pipe, stage, cond, noise)
    assert calls == STEPS + GUIDED_STEPS
    _, calls = _sample(pipe, stage, cond, noise, cfg_interval=(0.0, 1.0))
    assert calls == 2 * STEPS
    _, calls = _sample(pipe, stage, cond, noise, cfg_mode="batched")
    assert calls == STEPS


@pytest.mark.parametrize("stage", ["ss", "slat"])
def test_batched_cfg_equals_sequential(setup, stage):
    pipe, cond, ss_noise, slat_noise = setup
    noise = ss_noise if stage == "ss" else slat_noise
    seq, _ = _sample(pipe, stage, cond, noise, cfg_interval=(0.0, 1.0))
    bat, _ = _sample(pipe, stage, cond, noise, cfg_interval=(0.0, 1.0), cfg_mode="batched")
    guided_off, _ = _sample(pipe, stage, cond, noise, cfg_strength=0.0)
    assert (seq - guided_off).abs().max() > 1e-3   # guidance matters here, so the comparison can fail
    torch.testing.assert_close(bat, seq, **TOL)


def test_unknown_cfg_mode_is_refused(setup):
    pipe, cond, ss_noise, _ = setup
    with pytest.raises(ValueError, match="cfg_mode"):
        _sample(pipe, "ss", cond, ss_noise, cfg_mode="parallel")


def _to_kv_layers(model):
    return [m.to_kv for m in model.modules() if hasattr(m, "to_kv") and isinstance(m.to_kv, torch.nn.Linear)]


@pytest.mark.parametrize("stage", ["ss", "slat"])
@pytest.mark.parametrize("cfg_mode", ["sequential", "batched"])
def test_cached_condition_kv_equals_recomputed(setup, stage, cfg_mode):
    pipe, cond, ss_noise, slat_noise = setup
    noise = ss_noise if stage == "ss" else slat_noise
    model = pipe.models["sparse_structure_flow_model" if stage == "ss" else "slat_flow_model"]
    layers = _to_kv_layers(model)
    assert layers, "the flow has cross-attention layers"

    def run(**kw):
        counters = [CallCounter(m) for m in layers]
        for c in counters:
            c.__enter__()
        try:
            out, calls = _sample(pipe, stage, cond, noise, cfg_mode=cfg_mode, **kw)
        finally:
            for c in counters:
                c.__exit__(None, None, None)
        return out, calls, [c.calls for c in counters]

    ref, calls, kv_ref = run()
    got, _, kv_got = run(kv_cache=True)
    assert torch.equal(got, ref)
    assert kv_ref == [calls] * len(layers)          # recomputed at every model call
    # two distinct contexts either way: cond and neg apart (sequential), or [cond; neg] on guided
    # steps and cond alone outside the interval (batched)
    assert kv_got == [2] * len(layers)


def test_low_vram_equals_default_with_one_stage_resident(setup):
    """Low-VRAM mode: same Gaussians as the default mode; while each model runs it is the only one on
    the compute device; CFG is sequential even when batched is asked for (flow calls counted)."""
    pipe, *_ = setup
    frames = [np.zeros((64, 64, 4), np.uint8) for _ in range(T)]
    for t, f in enumerate(frames):
        f[16:44, 20 + 2 * t:40 + 2 * t] = (200, 80, 40, 255)
    kw = dict(seed=1, progress=False, ss_steps=2, slat_steps=2)
    ref = pipe.run(frames, **kw)
    low = Pipeline.from_pretrained(pipe.source).enable_low_vram("cpu")
    seen = []
    handles = [m.register_forward_pre_hook(lambda mod, *_a, key=key: seen.append((key, set(low.offload.resident))))
               for key, m in low.models.items()]
    try:
        batched = {"cfg_mode": "batched"}
        got = low.run(frames, sparse_structure_sampler_params=batched, slat_sampler_params=batched, **kw)
    finally:
        for h in handles:
            h.remove()
    assert all(torch.equal(a, b) for a, b in zip(got.coords, ref.coords))
    for g, r in zip(got.gaussians, ref.gaussians):
        torch.testing.assert_close(g.get_xyz, r.get_xyz, **TOL)
        torch.testing.assert_close(g.get_features, r.get_features, **TOL)
    assert {k for k, _ in seen} == set(low.models)
    assert all(resident == {id(low.models[key])} for key, resident in seen)
    # 2 steps at t = 1 and 0.75 (rescale_t 3), both guided: 2 sequential passes each
    assert sum(k == "sparse_structure_flow_model" for k, _ in seen) == 4
    assert sum(k == "slat_flow_model" for k, _ in seen) == 4
    assert low.offload.resident == set() and low.device == torch.device("cpu")


@pytest.mark.parametrize("stage", ["ss", "slat"])
def test_heun_solver_through_the_pipeline(setup, stage):
    """``solver="heun"`` runs the Heun counterpart of the folder's sampler: two evaluations per step
    (the guidance-interval rule per evaluation), a different result from Euler at the same steps."""
    from trellis_ext.pipelines.samplers import heun_counterpart, velocity_evaluations

    pipe, cond, ss_noise, slat_noise = setup
    noise = ss_noise if stage == "ss" else slat_noise
    sampler = heun_counterpart(pipe.ss_sampler if stage == "ss" else pipe.slat_sampler)
    model = pipe.models["sparse_structure_flow_model" if stage == "ss" else "slat_flow_model"]
    with CallCounter(model) as calls:
        out = sampler.sample(model, noise, cond, neg_cond=torch.zeros_like(cond), num_frames=T,
                             keep_trajectory=False, **PLAIN)
    assert calls.calls == velocity_evaluations("heun", STEPS, PLAIN["rescale_t"], PLAIN["cfg_interval"])
    heun = out.samples.feats if isinstance(out.samples, SparseTensor) else out.samples
    euler, _ = _sample(pipe, stage, cond, noise)
    assert (heun - euler).abs().max() > 1e-4


def test_pipeline_solver_parameter(setup):
    """``Pipeline.run``: ``solver`` in the sampler parameters picks the integration rule; an unknown
    one is refused before any work."""
    from ss4d.errors import InputError

    pipe, *_ = setup
    frames = [np.zeros((64, 64, 4), np.uint8) for _ in range(T)]
    for t, f in enumerate(frames):
        f[16:44, 20 + 2 * t:40 + 2 * t] = (200, 80, 40, 255)
    kw = dict(seed=1, progress=False, ss_steps=2, slat_steps=2)
    with CallCounter(pipe.models["slat_flow_model"]) as calls:
        got = pipe.run(frames, slat_sampler_params={"solver": "heun"}, **kw)
    # rescale_t 3: t = 1 -> 0.75 -> 0; evaluations at 1, 0.75 | 0.75, 0: guided but the last (0 < 0.5)
    assert calls.calls == 2 + 2 + 2 + 1
    assert got.params["slat"]["solver"] == "heun"
    with pytest.raises(InputError, match="unknown solver"):
        pipe.run(frames, sparse_structure_sampler_params={"solver": "rk4"}, **kw)


class _HostReads:
    """Counts ``Tensor.tolist`` / ``Tensor.item`` calls (each a device -> host copy, a sync on a GPU) and
    ``pool_structure`` calls (a sort) while active."""

    def __init__(self, monkeypatch):
        import trellis_ext.sparse.spatial as spatial

        self.count = 0
        for name in ("tolist", "item"):
            orig = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counting(orig))
        monkeypatch.setattr(spatial, "pool_structure", self._counting(spatial.pool_structure))

    def _counting(self, fn):
        def wrapped(*a, **k):
            self.count += 1
            return fn(*a, **k)
        return wrapped


@pytest.mark.parametrize("stage", ["ss", "slat"])
@pytest.mark.parametrize("cfg_mode", ["sequential", "batched"])
def test_no_host_reads_inside_the_sampler_loop_after_the_first_step(setup, stage, cfg_mode, monkeypatch):
    """The first step builds what depends on the voxels only (pooling groups, layouts, neighbour maps,
    window partitions) and caches it on the voxel set; every later step reuses it: no host read, no sort."""
    pipe, cond, ss_noise, slat_noise = setup
    noise = ss_noise if stage == "ss" else slat_noise
    ref, _ = _sample(pipe, stage, cond, noise, cfg_mode=cfg_mode)
    reads = _HostReads(monkeypatch)
    per_step = []
    key = "sparse_structure_flow_model" if stage == "ss" else "slat_flow_model"
    sampler = pipe.ss_sampler if stage == "ss" else pipe.slat_sampler
    out = sampler.sample(pipe.models[key], noise, cond, neg_cond=torch.zeros_like(cond), num_frames=T,
                         keep_trajectory=False, callback=lambda i, x: per_step.append(reads.count),
                         cfg_mode=cfg_mode, **PLAIN)
    assert len(per_step) == STEPS
    assert [b - a for a, b in zip(per_step, per_step[1:])] == [0] * (STEPS - 1), per_step
    got = out.samples.feats if isinstance(out.samples, SparseTensor) else out.samples
    assert torch.equal(got, ref)                   # the cached structures give the same numbers
