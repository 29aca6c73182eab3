"""ss4d.fp8: which layers the FP8 mode converts (the flow trunks' attention and MLP linears with
widths that are multiples of 16), and its refusals where it cannot run (CPU, no torchao): a bad-input
error naming everything missing. The conversion itself needs an FP8 GPU (scripts/bench_pipeline.py)."""
import pytest
import torch
from torch import nn

from ss4d import Pipeline
from ss4d.errors import InputError
from ss4d.fp8 import FP8_MODELS, apply_fp8, check_fp8, fp8_layer_names, fp8_missing
from ss4d.tiny import write_tiny_video_to_4d
from trellis_ext.sparse.linear import SparseLinear

#: The converted layers of one transformer block of either flow model.
BLOCK_LAYERS = ("self_attn.to_qkv", "self_attn.to_out", "cross_attn.to_q", "cross_attn.to_kv", "cross_attn.to_out",
                "mlp.mlp.0", "mlp.mlp.2")


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return Pipeline.from_pretrained(write_tiny_video_to_4d(str(tmp_path_factory.getbasetemp() / "tiny_ss4d")))


@pytest.mark.parametrize("key", FP8_MODELS)
def test_layer_selection_on_the_tiny_flows(pipe, key):
    model = pipe.models[key]
    blocks = len(model.blocks)
    want = [f"blocks.{i}.{layer}" for i in range(blocks) for layer in BLOCK_LAYERS]
    assert sorted(fp8_layer_names(model)) == sorted(want)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    kept = set(linears) - set(want)
    assert any("adaLN_modulation" in n for n in kept) and "input_layer" in kept and "out_layer" in kept
    assert any(n.startswith("t_embedder") for n in kept)


def test_layer_selection_rule():
    """Only trunk ("blocks.") linears, SparseLinear included; widths must be multiples of 16."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(32, 64)
            self.b = SparseLinear(64, 48)
            self.odd = nn.Linear(64, 24)
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(64, 128))
            self.conv = nn.Conv1d(16, 16, 1)

    model = nn.Module()
    model.input_layer = nn.Linear(16, 32)
    model.blocks = nn.ModuleList([Block(), Block()])
    assert fp8_layer_names(model) == ["blocks.0.a", "blocks.0.b", "blocks.1.a", "blocks.1.b"]


def test_refused_on_cpu_naming_what_is_missing(monkeypatch, pipe):
    assert any("CUDA GPU with compute capability >= 8.9" in m and "CPU" in m for m in fp8_missing(torch.device("cpu")))
    real = __import__("importlib").util.find_spec
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "torchao" else real(name, *a))
    missing = fp8_missing(torch.device("cpu"))
    assert len(missing) == 2 and "the torchao package (not installed)" in missing
    with pytest.raises(InputError, match=r"--fp8 needs a CUDA GPU .* and the torchao package .*; leave --fp8 out"):
        check_fp8(torch.device("cpu"))
    with pytest.raises(InputError, match="--fp8 needs"):
        pipe.enable_fp8()
    with pytest.raises(InputError):
        apply_fp8(pipe.models, torch.device("cpu"))
    assert pipe.fp8_layers == {}
