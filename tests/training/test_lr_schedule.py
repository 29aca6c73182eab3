"""``trainer.lr_schedule``: the rate as a pure function of the step (warm-up, linear / cosine decay), the rate each
logged step used, exact resume after SIGKILL mid-decay, and configs without a schedule hashed as before."""
import math

import pytest
import torch

from train_testkit import read_log, run_cli, step_losses, tiny_config, tiny_dataset, write_config  # noqa: F401

from ss4d.training.config import TrainConfig
from ss4d.training.errors import TrainingInputError
from ss4d.training.lr_schedule import LRSchedule

PHASES = [{"frames": 2, "steps": 3, "batch_size": 2}, {"frames": 4, "steps": 4, "batch_size": 1}]   # 7 steps


def test_factor_warms_up_linearly_then_decays_to_the_final_ratio_at_the_last_step():
    total = 11
    cos = LRSchedule(warmup_steps=2, decay="cosine", final_ratio=0.1)
    assert [cos.factor(s, total) for s in (0, 1)] == [0.5, 1.0]                 # (s + 1) / W
    assert cos.factor(2, total) == 1.0                                           # decay starts at step W ...
    assert cos.factor(total - 1, total) == pytest.approx(0.1)                     # ... ends at the last step
    assert cos.factor(6, total) == pytest.approx(0.1 + 0.9 * 0.5)                # half-way: the mean of both ends
    assert cos.factor(4, total) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 2 / 8)))
    lin = LRSchedule(decay="linear")
    assert [lin.factor(s, 5) for s in range(5)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    assert [LRSchedule(warmup_steps=4).factor(s, 10) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert LRSchedule(decay="cosine").factor(0, 1) == 1.0                        # a one-step run: no decay span


@pytest.mark.parametrize("bad", [{"decay": "step"}, {"warmup_steps": -1}, {"final_ratio": 1.5},
                                 {"warmup": 10}, {"warmup_steps": "many"}])
def test_bad_schedules_are_refused_with_the_accepted_form(bad):
    raw = tiny_config("ss_flow", phases=PHASES, lr_schedule=bad)
    with pytest.raises(TrainingInputError, match="lr_schedule") as e:
        TrainConfig(raw)
    assert "cosine" in str(e.value)


def test_no_schedule_keeps_the_config_hash_and_a_schedule_changes_it():
    """Configs written before schedules existed keep their hash (their runs resume); a schedule is part of what a
    resume checks (a different rate is a different run)."""
    plain = TrainConfig(tiny_config("ss_flow", phases=PHASES))
    assert "lr_schedule" not in plain.trainer
    assert [plain.lr_at(s) for s in range(plain.total_steps)] == [plain.trainer["lr"]] * 7
    constant = TrainConfig(tiny_config("ss_flow", phases=PHASES, lr_schedule={}))
    cosine = TrainConfig(tiny_config("ss_flow", phases=PHASES, lr_schedule={"decay": "cosine"}))
    assert len({plain.hash(), constant.hash(), cosine.hash()}) == 3


def test_each_step_trains_at_the_scheduled_rate_and_resumes_exactly_after_sigkill(tiny_dataset, tmp_path):  # noqa: F811
    """The rate logged for step s (1-based) is ``lr_at(s - 1)``, across the phase boundary, down to the final ratio;
    a run SIGKILLed mid-decay and resumed equals the uninterrupted run bit for bit; and the schedule is used (the
    losses leave the constant-rate run's after the first step, where both rates are equal)."""
    sched = {"warmup_steps": 0, "decay": "cosine", "final_ratio": 0.2}
    raw = tiny_config("ss_flow", phases=PHASES, checkpoint_every=3, eval_every=0, lr_schedule=sched)
    cfg = TrainConfig(raw)
    args = ["--config", write_config(tmp_path / "cfg.json", raw), "--data", tiny_dataset, "--no-progress"]
    assert run_cli(args + ["--output", tmp_path / "ref"]).returncode == 0
    rates = {r["step"]: r["lr"] for r in read_log(tmp_path / "ref") if "loss" in r}
    assert rates == {s: pytest.approx(cfg.lr_at(s - 1), rel=1e-12) for s in range(1, 8)}
    assert rates[1] == cfg.trainer["lr"] and rates[7] == pytest.approx(0.2 * cfg.trainer["lr"])
    assert all(rates[s + 1] < rates[s] for s in range(1, 7))

    killed = run_cli(args + ["--output", tmp_path / "run"], env={"SS4D_TRAIN_KILL_AT": "step:5"})
    assert killed.returncode == -9                                      # saved at step 3, killed after 5
    assert run_cli(args + ["--output", tmp_path / "run"]).returncode == 0
    assert step_losses(tmp_path / "run") == step_losses(tmp_path / "ref")
    from safetensors.torch import load_file
    final = "checkpoints/step_0000007/model.safetensors"
    a, b = load_file(str(tmp_path / "ref" / final)), load_file(str(tmp_path / "run" / final))
    assert all(torch.equal(a[k], b[k]) for k in a)

    plain = dict(raw, trainer={k: v for k, v in raw["trainer"].items() if k != "lr_schedule"})
    assert run_cli(["--config", write_config(tmp_path / "plain.json", plain), "--data", tiny_dataset,
                    "--no-progress", "--output", tmp_path / "plain"]).returncode == 0
    constant = step_losses(tmp_path / "plain")
    decayed = step_losses(tmp_path / "ref")
    assert constant[1] == decayed[1] and constant[7] != decayed[7]
