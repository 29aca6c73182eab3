"""Unit tests of the training pieces: flow formulas, per-clip t / CFG drop, EMA, clipper, sampler,
checkpoint folders, config phases, masks. No dataset needed."""
import json
import os

import numpy as np
import pytest
import torch

from trellis_ext.pipelines.samplers import FlowEulerSampler
from trellis_ext.pipelines.samplers.flow_process import (SIGMA_MIN, diffuse, model_time, velocity_target,
                                                         x0_from_velocity)
from trellis_ext.training import (EMA, AdaptiveGradClipper, CheckpointFolders, ResumableSampler, StepBatchSampler,
                                  apply_cfg_drop, cfg_drop_mask, dense_flow_loss, keyed_generator, latest_complete,
                                  list_complete, logit_normal_t, per_clip_t)
from ss4d.training.config import TrainConfig
from ss4d.training.errors import TrainingInputError
from ss4d.training.masking import MaskConfig, apply_masks, draw_masks, object_box


# ------------------------------------------------------------------ flow formulas
def test_flow_forward_process_closed_forms():
    x0, eps = torch.randn(5, 3), torch.randn(5, 3)
    t = torch.rand(5, 1)
    xt = diffuse(x0, eps, t)
    np.testing.assert_allclose(xt, (1 - t) * x0 + (SIGMA_MIN + (1 - SIGMA_MIN) * t) * eps, rtol=1e-6)
    v = velocity_target(x0, eps)
    # v is dx_t/dt and x0_from_velocity inverts diffuse given the true v
    dt = 1e-3
    fd = (diffuse(x0, eps, t + dt) - diffuse(x0, eps, t - dt)) / (2 * dt)
    np.testing.assert_allclose(fd, v, atol=1e-3)
    np.testing.assert_allclose(x0_from_velocity(xt, t, v), x0, atol=1e-5)
    assert model_time(torch.tensor([0.25])).item() == 250.0
    # the sampler's v -> x0 is the same function
    np.testing.assert_allclose(FlowEulerSampler().v_to_x0(xt, t, v), x0, atol=1e-5)


def test_logit_normal_t_moments_and_per_clip_rows():
    t = logit_normal_t(20000, keyed_generator(1), mean=1.0, std=1.0)
    logit = torch.log(t / (1 - t))
    assert abs(logit.mean().item() - 1.0) < 0.03 and abs(logit.std().item() - 1.0) < 0.03
    rows = per_clip_t(3, 4, keyed_generator(2))
    assert rows.shape == (12,)
    per_clip = rows.view(3, 4)
    assert torch.equal(per_clip, per_clip[:, :1].expand(3, 4))       # one t per clip
    assert len(set(per_clip[:, 0].tolist())) == 3


def test_cfg_drop_is_per_clip():
    drop = cfg_drop_mask(2000, 0.1, keyed_generator(3))
    assert abs(drop.float().mean().item() - 0.1) < 0.02
    cond = torch.randn(4 * 3, 5, 2) + 3
    d = torch.tensor([True, False, True, False])
    out = apply_cfg_drop(cond, d, 3).view(4, 3, 5, 2)
    assert (out[0] == 0).all() and (out[2] == 0).all()
    assert torch.equal(out[1], cond.view(4, 3, 5, 2)[1]) and torch.equal(out[3], cond.view(4, 3, 5, 2)[3])


def test_dense_flow_loss_matches_manual_mse():
    class Echo(torch.nn.Module):
        def forward(self, x, t, cond, num_frames=None):
            self.seen = (x, t, num_frames)
            return x * 0.5

    x0, eps, t = torch.randn(4, 2, 3), torch.randn(4, 2, 3), torch.rand(4)
    m = Echo()
    loss = dense_flow_loss(m, x0, eps, t, torch.zeros(4, 1, 1), num_frames=2)
    tt = t.view(4, 1, 1)
    xt = (1 - tt) * x0 + (SIGMA_MIN + (1 - SIGMA_MIN) * tt) * eps
    want = ((xt * 0.5 - ((1 - SIGMA_MIN) * eps - x0)) ** 2).mean()
    assert torch.allclose(loss, want, atol=1e-6)
    assert torch.allclose(m.seen[1], 1000 * t) and m.seen[2] == 2


# ------------------------------------------------------------------ EMA, clipper
def test_ema_closed_form_and_state():
    m = torch.nn.Linear(2, 1)
    ema = EMA(m, [0.9, 0.5])
    w0 = m.weight.detach().clone()
    with torch.no_grad():
        m.weight.add_(1.0)
    ema.update(m)
    sd = ema.state_dict_for(m, 0.9)
    assert torch.allclose(sd["weight"], 0.9 * w0 + 0.1 * (w0 + 1))
    assert torch.allclose(ema.state_dict_for(m, 0.5)["weight"], w0 + 0.5)
    other = EMA(torch.nn.Linear(2, 1), [0.9, 0.5])
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.shadow["0.9"]["weight"], ema.shadow["0.9"]["weight"])
    with pytest.raises(ValueError, match="rates differ"):
        EMA(m, [0.99]).load_state_dict(ema.state_dict())


def test_adaptive_clipper_percentile_cap_and_state():
    c = AdaptiveGradClipper(max_norm=1.0, percentile=50, buffer_size=4)
    assert c.threshold() == 1.0
    for n in (0.1, 0.2, 0.3, float("nan"), 0.4, 5.0):
        c.record(n)
    assert list(c.norms) == [0.2, 0.3, 0.4, 5.0]            # buffer of 4, nan never recorded
    assert c.threshold() == pytest.approx(np.percentile([0.2, 0.3, 0.4, 5.0], 50))
    c.record(9.0)
    c.record(9.0)
    assert c.threshold() == 1.0                             # capped at max_norm
    d = AdaptiveGradClipper()
    d.load_state_dict(c.state_dict())
    assert d.threshold() == c.threshold() and list(d.norms) == list(c.norms)


# ------------------------------------------------------------------ sampler
def test_resumable_sampler_epochs_ranks_and_resume():
    s = ResumableSampler(7, seed=3)
    first = [s.item(p) for p in range(7)]
    assert sorted(first) == list(range(7))                  # an epoch is a permutation
    assert [s.item(p) for p in range(7, 14)] != first       # the next epoch reshuffles
    r0, r1 = s.items_for_step(0, 3, 0, 2), s.items_for_step(0, 3, 1, 2)
    assert sorted(r0 + r1) == sorted([s.item(p) for p in range(6)])   # ranks split the positions
    def base(step):
        return step * 2
    full = list(StepBatchSampler(s, 0, 5, 2, base))
    resumed = list(StepBatchSampler(ResumableSampler(7, seed=3), 3, 5, 2, base))
    assert resumed == full[3:]                              # a fresh sampler at step 3 continues exactly


# ------------------------------------------------------------------ checkpoint folders
def test_checkpoint_folders_atomic_commit_prune_and_stale(tmp_path):
    ck = CheckpointFolders(tmp_path / "ck", keep_last=2)
    for step in (1, 2, 3):
        tmp = ck.begin(step)
        (tmp / "w.bin").write_bytes(bytes([step]))
        ck.commit(step)
    assert [p.name for p in list_complete(ck.root)] == ["step_0000002", "step_0000003"]
    # a save killed before its marker: never "latest", removed as stale
    tmp = ck.begin(4)
    (tmp / "w.bin").write_bytes(b"x")
    (ck.root / "step_0000009").mkdir()                      # a folder without the marker is ignored too
    assert latest_complete(ck.root).name == "step_0000003"
    assert tmp in ck.clean_stale() and not tmp.exists()
    # saving the same step again swaps it in place, never leaving neither
    tmp = ck.begin(3)
    (tmp / "w.bin").write_bytes(b"new")
    ck.commit(3, {"note": 1})
    assert (ck.root / "step_0000003" / "w.bin").read_bytes() == b"new"
    assert json.loads((ck.root / "step_0000003" / "COMPLETE.json").read_text()) == {"step": 3, "note": 1}


# ------------------------------------------------------------------ config
def _cfg(**over):
    raw = {"stage": "ss_flow", "dataset": {"ss_encoder": "x"},
           "progressive": [{"frames": 2, "steps": 3, "batch_size": 2}, {"frames": 4, "steps": 2, "batch_size": 1}]}
    raw.update(over)
    return TrainConfig(raw)


def test_phase_is_a_pure_function_of_step_and_positions():
    c = _cfg()
    assert [c.phase_at(s)[1].frames for s in range(7)] == [2, 2, 2, 4, 4, 4, 4]
    assert [c.phase_at(s)[2] for s in (0, 3, 6)] == [0, 3, 3]
    # base positions count the earlier steps' global batches (world 2)
    assert [c.base_position(s, 2) for s in range(6)] == [0, 4, 8, 12, 14, 16]
    assert c.total_steps == 5


def test_config_errors_and_resume_safe_hash():
    with pytest.raises(TrainingInputError, match="even number of frames"):
        TrainConfig({"stage": "slat_flow", "progressive": [{"frames": 3, "steps": 1, "batch_size": 1}]})
    with pytest.raises(TrainingInputError, match="unknown stage"):
        TrainConfig({"stage": "nope", "progressive": []})
    with pytest.raises(TrainingInputError, match="divisible"):
        _cfg(progressive=[{"frames": 2, "steps": 1, "batch_size": 3, "micro_batches": 2}])
    a, b = _cfg(), _cfg(trainer={"checkpoint_every": 7, "num_workers": 2})
    assert a.hash() == b.hash()                             # bookkeeping keys may change on resume
    assert a.hash() != _cfg(trainer={"lr": 3e-4}).hash()


# ------------------------------------------------------------------ masks
def _frames(t=6, size=64):
    x = np.zeros((t, size, size, 3), np.uint8)
    x[:, 16:48, 20:40] = 200                                # the object box: x 20..40, y 16..48
    return x


def test_masks_reproducible_inside_object_box_and_keyed():
    cfg = MaskConfig(clip_prob=1.0, frame_prob=1.0, max_rects=3, min_size=0.2, max_size=0.4, blackout_prob=0.0)
    x = _frames()
    m1 = draw_masks(x, cfg, np.random.default_rng(5))
    m2 = draw_masks(x, cfg, np.random.default_rng(5))
    assert np.array_equal(m1, m2) and m1.any()
    assert not np.array_equal(m1, draw_masks(x, cfg, np.random.default_rng(6)))
    assert object_box(x[0]) == (20, 16, 40, 48)
    ys, xs = np.nonzero(m1.any(0))
    assert xs.min() >= 20 and xs.max() < 40 and ys.min() >= 16 and ys.max() < 48
    out = apply_masks(x, m1)
    assert (out[m1] == 0).all() and np.array_equal(out[~m1], x[~m1]) and x.max() == 200   # input untouched
    keep = draw_masks(x, MaskConfig(clip_prob=1.0, frame_prob=1.0, blackout_prob=1.0, keep_first=True),
                      np.random.default_rng(0))
    assert not keep[0].any() and keep[1:].all()             # blackout, frame 0 spared
    assert not draw_masks(x, MaskConfig(clip_prob=0.0), np.random.default_rng(0)).any()
    with pytest.raises(TrainingInputError, match="unknown conditioning.mask"):
        MaskConfig.from_dict({"prob": 1})


# ------------------------------------------------------------------ shipped configs
@pytest.mark.parametrize("name", ["ss_flow_4d", "slat_vae_4d", "slat_flow_4d", "ss_vae", "tiny_ss_flow",
                                  "tiny_slat_vae", "tiny_slat_flow", "tiny_ss_vae"])
def test_shipped_configs_parse_and_build(name):
    import ss4d.models  # noqa: F401  (registers the 4D classes)
    from ss4d.training.config import load_config
    from ss4d.training.stages import STAGES
    from trellis_ext.models.checkpoint import build_model

    path = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "train", f"{name}.json")
    cfg = load_config(path)
    assert set(cfg.models) == set(STAGES[cfg.stage].model_keys)
    with torch.device("meta"):
        for spec in cfg.models.values():
            m = build_model(spec)
            assert all(p.dtype == torch.float32 for p in m.parameters())   # fp32 master weights
    if not name.startswith("tiny"):
        assert [p.frames for p in cfg.phases] in ([8, 16, 32], [8])
        assert cfg.trainer["mixed_precision"] == "bf16" and cfg.trainer["lr"] == 1e-4
