"""Opt-in torch.compile of the structure flow (ss4d.compile_flow): the compiled forward equals the
eager one within float tolerance (backend ``"eager"``: TorchDynamo's graph capture and guards, no
C++ code generation, so this runs in ~20 s on a busy CPU; inductor itself is exercised on the GPU
by ``scripts/bench_pipeline.py``'s compile row); hooks still see every call; requested-but-unavailable and a failing
compile warn once and run eagerly with the same numbers."""
import warnings

import pytest
import torch

from ss4d import Pipeline
from ss4d.compile_flow import compile_forward, compile_unavailable_reason, is_compiled, uncompile_forward
from ss4d.perf import CallCounter
from ss4d.tiny import write_tiny_video_to_4d

T = 2
PARAMS = {"steps": 2, "rescale_t": 1.0, "cfg_strength": 3.0, "cfg_interval": (0.5, 1.0)}
TOL = {"atol": 1e-5, "rtol": 1e-5}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pipe = Pipeline.from_pretrained(write_tiny_video_to_4d(str(tmp_path_factory.getbasetemp() / "tiny_ss4d")))
    flow = pipe.models["sparse_structure_flow_model"]
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(T, 4, pipe.image_cond_model.channels, generator=g)
    r = flow.resolution
    noise = torch.randn(T, flow.in_channels, r, r, r, generator=g)
    return pipe, cond, noise


def _structure(pipe, cond, noise):
    flow = pipe.models["sparse_structure_flow_model"]
    with CallCounter(flow) as calls:
        out = pipe.ss_sampler.sample(flow, noise, cond, neg_cond=torch.zeros_like(cond), num_frames=T,
                                     keep_trajectory=False, **PARAMS)
    return out.samples, calls.calls


def test_compiled_structure_flow_equals_eager(setup):
    pipe, cond, noise = setup
    ref, calls = _structure(pipe, cond, noise)
    status = pipe.enable_compile(backend="eager")["sparse_structure_flow_model"]
    try:
        assert status.active and status.mode is None      # CPU: plain compilation, no CUDA graphs
        assert is_compiled(pipe.models["sparse_structure_flow_model"])
        got, got_calls = _structure(pipe, cond, noise)
    finally:
        pipe.disable_compile()
    assert not is_compiled(pipe.models["sparse_structure_flow_model"]) and pipe.compiled == {}
    assert got_calls == calls == 2 * 2     # hooks run around the compiled forward (t = 1, .5: both guided)
    assert (ref - noise).abs().max() > 1e-3
    torch.testing.assert_close(got, ref, **TOL)


def test_unavailable_compiler_warns_once_and_runs_eagerly(setup, monkeypatch):
    pipe, cond, noise = setup
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr("ss4d.compile_flow._warned", set())   # "once" is per process: other tests may have said it
    assert "C++ compiler" in compile_unavailable_reason(torch.device("cpu"))
    flow = pipe.models["sparse_structure_flow_model"]
    with pytest.warns(RuntimeWarning, match="--compile requested but inductor needs a C\\+\\+ compiler"):
        status = compile_forward(flow, torch.device("cpu"))
    assert not status.active and "running eagerly" in status.describe() and not is_compiled(flow)
    with warnings.catch_warnings():
        warnings.simplefilter("error")        # said once only
        compile_forward(flow, torch.device("cpu"))


def test_failing_compile_falls_back_to_eager(setup):
    pipe, cond, noise = setup
    ref, _ = _structure(pipe, cond, noise)

    def broken_backend(gm, example_inputs):
        raise RuntimeError("no kernels today")

    flow = pipe.models["sparse_structure_flow_model"]
    torch._dynamo.reset()
    status = compile_forward(flow, torch.device("cpu"), backend=broken_backend)
    try:
        assert status.active
        with pytest.warns(RuntimeWarning, match=r"compiling failed \(BackendCompilerFailed"):
            got, _ = _structure(pipe, cond, noise)
        assert not is_compiled(flow)
    finally:
        uncompile_forward(flow)
        torch._dynamo.reset()
    torch.testing.assert_close(got, ref, **TOL)
