"""ss4d.models.per_frame: TRELLIS's 3D classes behind the 4D calling convention compute exactly the TRELLIS
model on every frame alone, keep TRELLIS's checkpoint keys, and inflate to the 4D classes."""
import torch

import ss4d.models  # noqa: F401  (registers the classes)
from ss4d.frames import fold_sparse_frames
from ss4d.models.inflation import INFLATORS
from ss4d.models.per_frame import is_per_frame, trellis_class_name
from trellis_ext.models import build_model
from trellis_ext.sparse import SparseTensor

SS_FLOW = {"resolution": 4, "in_channels": 4, "out_channels": 4, "model_channels": 32, "cond_channels": 16,
           "num_blocks": 2, "num_heads": 2, "mlp_ratio": 2, "patch_size": 1, "pe_mode": "ape", "qk_rms_norm": True}
SLAT_FLOW = {"resolution": 16, "in_channels": 4, "out_channels": 4, "model_channels": 32, "cond_channels": 16,
             "num_blocks": 1, "num_heads": 2, "mlp_ratio": 2, "patch_size": 2, "num_io_res_blocks": 1,
             "io_block_channels": [16]}
T, L = 3, 5


def _pair(per_frame_name, trellis_name, args, seed=0):
    torch.manual_seed(seed)
    per_frame = build_model({"name": per_frame_name, "args": args})
    trellis = build_model({"name": trellis_name, "args": args})
    trellis.load_state_dict(per_frame.state_dict(), strict=True)      # same keys and shapes as TRELLIS
    return per_frame.eval(), trellis.eval()


def _reinit(model, seed=1):
    """Non-zero weights everywhere (TRELLIS zero-inits the output layers, which would make every output 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def test_structure_flow_per_frame_equals_trellis_on_each_frame_alone():
    per_frame, trellis = _pair("SparseStructureFlowPerFrame", "SparseStructureFlowModel", SS_FLOW)
    _reinit(per_frame), trellis.load_state_dict(per_frame.state_dict())
    x = torch.randn(T, 4, 4, 4, 4)
    t = torch.full((T,), 500.0)
    cond = torch.randn(T, L, 16)
    with torch.no_grad():
        out = per_frame(x, t, cond, num_frames=T)
        for i in range(T):
            alone = trellis(x[i:i + 1], t[i:i + 1], cond[i:i + 1])
            torch.testing.assert_close(out[i:i + 1], alone, rtol=1e-5, atol=1e-6)
        changed = x.clone()
        changed[2] += 1.0
        assert torch.equal(per_frame(changed, t, cond, num_frames=T)[:2], out[:2])   # frame 2 never reaches 0, 1
    assert out.abs().sum() > 0


def test_slat_flow_per_frame_equals_trellis_on_each_frame_alone():
    per_frame, trellis = _pair("SLatFlowPerFrame", "SLatFlowModel", SLAT_FLOW)
    _reinit(per_frame), trellis.load_state_dict(per_frame.state_dict())
    g = torch.Generator().manual_seed(0)
    frames = [torch.unique(torch.randint(0, 16, (40, 3), generator=g), dim=0) for _ in range(T)]
    coords, _ = fold_sparse_frames([frames])
    feats = torch.randn(coords.shape[0], 4, generator=g)
    t = torch.full((T,), 300.0)
    cond = torch.randn(T, L, 16, generator=g)
    with torch.no_grad():
        out = per_frame(SparseTensor(feats, coords), t, cond, num_frames=T)   # any T: no pair merge
        for i in range(T):
            rows = coords[:, 0] == i
            c = coords[rows].clone()
            c[:, 0] = 0
            alone = trellis(SparseTensor(feats[rows], c), t[i:i + 1], cond[i:i + 1])
            torch.testing.assert_close(out.feats[rows], alone.feats, rtol=1e-5, atol=1e-5)
    assert out.feats.abs().sum() > 0


def test_per_frame_models_inflate_to_the_4d_classes_with_every_trellis_weight():
    per_frame, _ = _pair("SLatFlowPerFrame", "SLatFlowModel", SLAT_FLOW)
    assert is_per_frame(per_frame) and trellis_class_name(per_frame) == "SLatFlowModel"
    four_d = INFLATORS["slat_flow_model"](per_frame, pe_mode="rope_t", expand_self_attn=True, conv_type="3D_1D",
                                          num_io_res4d_blocks=1)
    assert type(four_d).__name__ == "SLatFlow4DModel" and not is_per_frame(four_d)
    sd = four_d.state_dict()
    for k, v in per_frame.state_dict().items():
        assert torch.equal(sd[k], v), k
    assert any(k.startswith("input_blocks_t.") for k in sd)              # the new temporal parts
