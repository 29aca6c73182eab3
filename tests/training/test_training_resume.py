"""Exact resume after SIGKILL (mid-run and mid-save), a lengthened last phase equal to training that long, a
2-process gloo run keeps ranks equal, and the inflated structure flow's loss at T=1 equals TRELLIS's 3D model's."""
import copy
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from train_testkit import REPO, read_log, run_cli, step_losses, tiny_config, tiny_dataset, write_config  # noqa: F401

from trellis_ext.training.checkpoint import latest_complete

PHASES = [{"frames": 2, "steps": 4, "batch_size": 2}, {"frames": 4, "steps": 3, "batch_size": 1}]


def _final_state(run):
    ck = latest_complete(run / "checkpoints")
    return ck.name, load_file(str(ck / "model.safetensors")), load_file(str(ck / "ema.safetensors"))


def _assert_same_final_state(ref, run, name: str) -> None:
    """Both runs' newest checkpoints are ``name`` with bit-identical weights and EMA weights."""
    name_a, model_a, ema_a = _final_state(ref)
    name_b, model_b, ema_b = _final_state(run)
    assert name_a == name_b == name
    for a, b in ((model_a, model_b), (ema_a, ema_b)):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_sigkill_mid_run_and_mid_save_then_resume_is_bit_identical(tiny_dataset, tmp_path):  # noqa: F811
    raw = tiny_config("ss_flow", phases=PHASES, checkpoint_every=3, eval_every=0, keep_last=2)
    cfg = write_config(tmp_path / "cfg.json", raw)
    args = ["--config", cfg, "--data", tiny_dataset, "--no-progress"]

    ref = tmp_path / "ref"          # the uninterrupted reference, in this process
    from ss4d.data.rasterize import cpu_threads
    from ss4d.training.config import TrainConfig
    from ss4d.training.loop import train
    # at the CLI runs' thread count (run_cli: OMP_NUM_THREADS=1): bit-identity holds for one thread count, and this
    # process's count is whatever an earlier in-process test left (seen: 2 after a generation, a 1-ulp loss change)
    with cpu_threads(1):
        train(TrainConfig(raw), tiny_dataset, ref, progress=False)

    run = tmp_path / "run"
    killed = run_cli(args + ["--output", run], env={"SS4D_TRAIN_KILL_AT": "step:5"})
    assert killed.returncode == -9                                    # SIGKILL after step 5 (saved at 3)
    assert latest_complete(run / "checkpoints").name == "step_0000003"
    # resume with 1 data worker (a bookkeeping key may change), killed again in the middle of saving step 6
    raw["trainer"]["num_workers"] = 1
    cfg2 = write_config(tmp_path / "cfg_workers.json", raw)
    killed = run_cli(["--config", cfg2, "--data", tiny_dataset, "--no-progress", "--output", run],
                     env={"SS4D_TRAIN_KILL_AT": "save:6"})
    assert killed.returncode == -9
    assert (run / "checkpoints" / ".tmp-step_0000006").is_dir()        # the half-written save is left ...
    assert latest_complete(run / "checkpoints").name == "step_0000003"  # ... and never taken as a checkpoint
    r = run_cli(["--config", cfg2, "--data", tiny_dataset, "--no-progress", "--output", run, "--resume", "auto"])
    assert r.returncode == 0, r.stderr
    assert not (run / "checkpoints" / ".tmp-step_0000006").exists()

    assert step_losses(run) == step_losses(ref)                        # same per-step losses, bit for bit
    assert sorted(step_losses(ref)) == list(range(1, 8))
    _assert_same_final_state(ref, run, "step_0000007")
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["step_0000006", "step_0000007"]  # keep 2


def test_changed_config_is_refused_on_resume_and_checkpoints_kept(tiny_dataset, tmp_path, capsys):  # noqa: F811
    from ss4d.training.cli import main

    def run(cfg, *extra):
        code = main(["--config", str(cfg), "--data", str(tiny_dataset), "--output", str(tmp_path / "run"),
                     "--no-progress", *extra])
        return code, capsys.readouterr().err

    raw = tiny_config("ss_flow", phases=[{"frames": 2, "steps": 2, "batch_size": 1}], checkpoint_every=1,
                      eval_every=0)
    code, err = run(write_config(tmp_path / "a.json", raw))
    assert code == 0, err
    ck = tmp_path / "run" / "checkpoints"
    before = {p.name: (p / "model.safetensors").read_bytes() for p in ck.iterdir()}
    raw["trainer"]["lr"] = 0.5
    raw["progressive"][0]["steps"] = 3
    changed = write_config(tmp_path / "b.json", raw)
    code, err = run(changed)
    assert code == 2 and "config differs" in err and "Traceback" not in err
    code, err = run(changed, "--resume", "none")
    assert code == 2 and "already has checkpoints" in err
    assert {p.name: (p / "model.safetensors").read_bytes() for p in ck.iterdir()} == before
    code, err = run(changed, "--allow-config-change")
    assert code == 0, err
    assert max(step_losses(tmp_path / "run")) == 3


DDP_SCRIPT = """
import json, sys
from ss4d.training.config import TrainConfig
from ss4d.training.loop import train
raw = json.load(open(sys.argv[1]))
s = train(TrainConfig(raw), sys.argv[2], sys.argv[3], progress=False)
open(f"{sys.argv[3]}/digest_rank{s['rank']}.txt", "w").write(s["weights_sha256"])
"""


def test_two_process_gloo_run_keeps_ranks_equal(tiny_dataset, tmp_path):  # noqa: F811
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun not found next to the interpreter")
    raw = tiny_config("ss_flow", phases=[{"frames": 2, "steps": 3, "batch_size": 1}], checkpoint_every=3,
                      eval_every=0)
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    run = tmp_path / "run"
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")
    r = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(script),
                        str(write_config(tmp_path / "c.json", raw)), str(tiny_dataset), str(run)],
                       capture_output=True, text=True, env=env, timeout=240, cwd=str(REPO))
    assert r.returncode == 0, r.stderr[-3000:]
    d0, d1 = (run / "digest_rank0.txt").read_text(), (run / "digest_rank1.txt").read_text()
    assert d0 == d1
    steps = [x for x in read_log(run) if "loss" in x]
    assert len(steps) == 3 and all(x["grad_norm"] > 0 and not x["skipped"] for x in steps)   # they trained
    assert latest_complete(run / "checkpoints").name == "step_0000003"
    assert sorted(p.name for p in latest_complete(run / "checkpoints").glob("random_states_*")) == \
        ["random_states_0.pkl", "random_states_1.pkl"]                                          # both ranks saved


def test_inflated_structure_flow_loss_at_one_frame_equals_trellis():
    from ss4d.models.ss_flow_4d import inflate_ss_flow
    from trellis_ext.models import get_model_class
    from trellis_ext.pipelines.tiny import randomize_weights
    from trellis_ext.training.flow import dense_flow_loss, keyed_generator, per_clip_t

    torch.manual_seed(0)
    model3d = get_model_class("SparseStructureFlowModel")(
        resolution=8, in_channels=8, out_channels=8, model_channels=32, cond_channels=16, num_blocks=2, num_heads=2,
        mlp_ratio=2, patch_size=1, pe_mode="ape", qk_rms_norm=True)
    model3d = randomize_weights(model3d, 3).eval()
    model4d = inflate_ss_flow(model3d, expand_self_attn=True, window_size=8, pe_mode="rope_t").eval()
    gen = keyed_generator(0, 5, 0, 0)
    b = 3
    x0, noise = torch.randn(b, 8, 8, 8, 8, generator=gen), torch.randn(b, 8, 8, 8, 8, generator=gen)
    cond = torch.randn(b, 10, 16, generator=gen)
    t = per_clip_t(b, 1, gen)
    with torch.no_grad():
        loss3d = dense_flow_loss(model3d, x0, noise, t, cond)
        loss4d = dense_flow_loss(model4d, x0, noise, t, cond, num_frames=1)
    assert torch.allclose(loss3d, loss4d, rtol=1e-5, atol=1e-6), (loss3d, loss4d)


def test_extending_the_last_phase_equals_training_that_long_from_the_start(tiny_dataset, tmp_path):  # noqa: F811
    """A finished run given more steps in its last phase (``--allow-config-change``) continues where it stopped and
    ends bit-identical to a run configured with those steps from the start: how a lab (and ``make small-model``)
    lengthens a stage without paying for the steps already done."""
    from ss4d.data.rasterize import cpu_threads
    from ss4d.training.config import TrainConfig
    from ss4d.training.loop import train

    short = tiny_config("ss_flow", phases=[{"frames": 2, "steps": 2, "batch_size": 2},
                                           {"frames": 4, "steps": 3, "batch_size": 1}], checkpoint_every=3, eval_every=0)
    longer = copy.deepcopy(short)
    longer["progressive"][-1]["steps"] = 6
    with cpu_threads(1):
        train(TrainConfig(longer), tiny_dataset, tmp_path / "ref", progress=False)
        train(TrainConfig(short), tiny_dataset, tmp_path / "run", progress=False)
        assert max(step_losses(tmp_path / "run")) == 5
        train(TrainConfig(longer), tiny_dataset, tmp_path / "run", progress=False, allow_config_change=True)
    starts = [r["step"] for r in read_log(tmp_path / "run") if "skipped_short_clips" in r]   # a line per (re)start
    assert starts == [0, 2, 5]                                        # continued at step 5, not from scratch
    assert step_losses(tmp_path / "run") == step_losses(tmp_path / "ref")
    _assert_same_final_state(tmp_path / "ref", tmp_path / "run", "step_0000008")
