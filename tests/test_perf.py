"""ss4d.perf and scripts/bench_pipeline.py: FLOP counts against hand counts; the table and JSON."""
import importlib.util
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import REPO
from ss4d.perf import CallCounter, StageMeter, count_flops, format_table
from trellis_ext.attention import MultiHeadAttention


pytestmark = pytest.mark.usefixtures("one_thread")


class _Small(nn.Module):
    """Linear(16 -> 32), 4-head SDPA self-attention, Linear(32 -> 8)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(16, 32), nn.Linear(32, 8)

    def forward(self, x):
        h = self.a(x)
        q = h.unflatten(-1, (4, 8)).transpose(1, 2)
        h = F.scaled_dot_product_attention(q, q, q).transpose(1, 2).flatten(2)
        return self.b(h)


def test_count_flops_matches_a_hand_count():
    B, L = 2, 5
    hand = (2 * B * L * 16 * 32            # Linear a
            + 2 * (2 * B * 4 * L * L * 8)  # QKᵀ and PV, 4 heads of 8
            + 2 * B * L * 32 * 8)          # Linear b
    _, flops, per_op = count_flops(_Small(), torch.randn(B, L, 16))
    assert flops == hand == 21760
    assert sum(per_op.values()) == flops


def test_count_flops_sees_our_attention_layers():
    """The counter is run with ATTN_BACKEND=sdpa, so attention of trellis_ext layers is counted."""
    B, L, C, H = 2, 5, 16, 2
    attn = MultiHeadAttention(C, H)
    hand = 2 * B * L * C * 3 * C + 2 * (2 * B * H * L * L * (C // H)) + 2 * B * L * C * C
    assert count_flops(attn, torch.randn(B, L, C))[1] == hand
    # without the override the naive/other backends may be counted differently, never more
    assert count_flops(attn, torch.randn(B, L, C), attention_backend="naive")[1] <= hand


def test_call_counter_and_meter():
    lin = nn.Linear(3, 3)
    with CallCounter(lin) as c, StageMeter(torch.device("cpu")) as m:
        for _ in range(3):
            lin(torch.randn(1, 3))
    lin(torch.randn(1, 3))
    assert c.calls == 3
    assert m.seconds > 0 and m.peak > 0 and m.reserved == m.peak


def test_format_table():
    text = format_table([{"a": 1.234, "b": "x"}, {"a": None, "b": "long"}], [("a", "A", ".1f"), ("b", "B", "s")])
    assert text.splitlines() == ["  A     B", "---  ----", "1.2     x", "  -  long"]


def load_bench_pipeline():
    """scripts/bench_pipeline.py as a module (scripts are not a package)."""
    spec = importlib.util.spec_from_file_location("bench_pipeline", REPO / "scripts" / "bench_pipeline.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_bench_pipeline_cpu_table_and_json(tmp_path, capsys):
    bench = load_bench_pipeline()
    out = tmp_path / "bench.json"
    assert bench.main(["--frames", "2", "--cpu-steps", "1", "--no-thread-compare", "--memory-frames",
                       "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["gpu_full"] is None and "SKIPPED" in printed
    (row,) = data["cpu_tiny"]["rows"]
    assert row["T"] == 2
    # one step at t = 1, inside the tiny samplers' guidance interval [0.5, 1]: cond + neg per stage
    assert row["model_calls"] == {"sparse_structure": 2, "slat": 2}
    stage_flops = [row["stages"][k]["flops"] for k in bench.GENERATION_STAGES]
    assert all(f > 0 for f in stage_flops)
    assert math.isclose(row["pflop"], sum(stage_flops) / 1e15)
    assert math.isclose(row["tflops"], sum(stage_flops) / row["seconds"] / 1e12)
    assert math.isclose(row["fraction"], row["tflops"] / data["cpu_tiny"]["fp32_matmul_ceiling_tflops"])
    table = printed[printed.index("# per generation"):].splitlines()
    assert table[1].split()[:3] == ["run", "T", "gen"] and table[3].split()[:2] == ["cpu-tiny", "2"]


def test_gpu_plan_covers_the_readme_table():
    """The GPU rows (not runnable here): every T for bf16 default+fast, fp16 at the largest T, and
    memory rows in default and low-VRAM mode at 32, 64 and 128 frames."""
    bench = load_bench_pipeline()
    plan = bench.gpu_plan([8, 16, 32], ["bf16", "fp16"], [64, 128])
    assert [(p[1], p[2], p[3], p[4], p[6]) for p in plan] == [
        ("bf16", 32, "default", False, ""), ("bf16", 32, "fast", False, ""),           # the README's seconds
        ("bf16", 32, "one_step", False, ""), ("bf16", 32, "one_step", True, ""),       # its memory figures
        ("bf16", 64, "one_step", False, ""), ("bf16", 64, "one_step", True, ""),
        ("bf16", 128, "one_step", False, ""), ("bf16", 128, "one_step", True, ""),
        ("bf16", 128, "one_step_chunked", True, ""),
        ("bf16", 32, "default", False, "fp8"), ("bf16", 32, "default", False, "compile"),   # faster work
        ("bf16", 8, "default", False, ""), ("bf16", 8, "fast", False, ""), ("bf16", 16, "default", False, ""),
        ("bf16", 16, "fast", False, ""), ("fp16", 32, "default", False, ""), ("fp16", 32, "fast", False, "")]
    # FLOPs counted on the timed rows (the compile / fp8 rows do the default row's work)
    assert [p[5] for p in plan] == [p[3] in ("default", "fast") and not p[6] for p in plan]
    assert len(bench.gpu_plan([8, 16, 32], ["bf16", "fp16"], [64, 128], accel=False)) == len(plan) - 2


def test_gpu_bench_script_measures_short_clips_before_the_full_plan():
    """scripts/gpu_bench.sh, the one prepared call of a lent GPU: its first pass is T = 8 (default, fast, memory in
    default and low-VRAM mode; about 3 minutes on an H200), so that a call always yields figures; the second is
    the full README plan under a time budget. Each pass's arguments parse as bench_pipeline.py reads them."""
    import shlex

    bench = load_bench_pipeline()
    text = (REPO / "scripts" / "gpu_bench.sh").read_text().replace("\\\n", " ")
    calls = [shlex.split(line.split("python3 scripts/bench_pipeline.py", 1)[1].split("2>&1")[0])
             for line in map(str.strip, text.splitlines()) if line.startswith("python3 scripts/bench_pipeline.py")]
    assert len(calls) == 2
    plans = []
    for argv in calls:
        args = bench.parse_args([a.replace("$OUT_DIR", "out").replace("$BUDGET_S", "150") for a in argv])
        assert args.no_cpu and args.no_thread_compare and args.json
        plans.append(bench.gpu_plan(args.gpu_frames, args.gpu_dtypes, args.memory_frames, fast=not args.no_fast,
                                    accel=not args.no_accel))
    assert [(p[1], p[2], p[3], p[4], p[6]) for p in plans[0]] == [
        ("bf16", 8, "default", False, ""), ("bf16", 8, "fast", False, ""),
        ("bf16", 8, "one_step", False, ""), ("bf16", 8, "one_step", True, "")]
    assert plans[1] == bench.gpu_plan([8, 16, 32], ["bf16", "fp16"], [64, 128])     # the README table's plan


def test_gpu_rows_code_runs_on_cpu_with_the_tiny_pipeline(tmp_path_factory):
    """The GPU-row code path (dtype switches, low-VRAM toggling, FLOP counts, budget) run on the CPU
    with the tiny pipeline, so a GPU session does not find its bugs."""
    from ss4d import Pipeline
    from ss4d.compile_flow import is_compiled
    from ss4d.tiny import write_tiny_video_to_4d

    bench = load_bench_pipeline()
    pipe = Pipeline.from_pretrained(write_tiny_video_to_4d(str(tmp_path_factory.getbasetemp() / "tiny_ss4d")))
    out = bench.bench_gpu_full([2], ["fp32", "bf16"], 1, [4], pipe=pipe, image_size=64, ceiling_size=64,
                               compile_backend="eager")
    labels = [(r["label"], r["T"]) for r in out["rows"]]
    assert labels == [("fp32 default", 2), ("fp32 fast", 2), ("fp32 mem", 2), ("fp32 mem low-vram", 2),
                      ("fp32 mem", 4), ("fp32 mem low-vram", 4), ("fp32 mem low-vram chunked", 4),
                      ("bf16 default fp8", 2), ("fp32 default compile", 2), ("bf16 default", 2), ("bf16 fast", 2)]
    fp8, compiled = out["rows"][7], out["rows"][8]
    assert compiled["compile"]["sparse_structure_flow_model"].startswith("compiled (eager")
    assert compiled["compile_warmup_s"] > 0 and not any(is_compiled(m) for m in pipe.models.values())
    assert fp8["skipped_reason"].startswith("needs a CUDA GPU")      # no FP8 GPU here: said, not crashed
    assert all(r["peak_gib"] > 0 and not r.get("oom") for r in out["rows"] if "skipped_reason" not in r)
    timed = [r for r in out["rows"] if "mem" not in r["label"] and "model_calls" in r]
    assert all(r["pflop"] > 0 and r["fraction"] > 0 for r in timed)
    # default = sequential CFG: two calls per guided step (1 step at t=1); fast = Heun, batched CFG:
    # one call at t=1 (guided, batched) and one at t=0 (unguided), i.e. 3 passes
    assert [r["model_calls"]["slat"] for r in timed] == [2, 2, 2, 2]
    assert [r["model_passes"]["slat"] for r in timed] == [2, 3, 2, 3]
    assert out["sparse_conv_backend"] == "torch" and not pipe.low_vram
    chunked = out["rows"][6]   # T=4 in chunks of 32: one chunk, no border
    assert chunked["flicker_border"] is None and chunked["flicker_inside"] > 0
    assert bench.bench_gpu_full([2], ["fp32"], 1, [], pipe=pipe, image_size=64, ceiling_size=64, accel=False,
                                budget_s=1e-9)["skipped"] == [{"label": "fp32 default", "T": 2},
                                                              {"label": "fp32 fast", "T": 2},
                                                              {"label": "fp32 mem", "T": 2},
                                                              {"label": "fp32 mem low-vram", "T": 2}]


def test_compare_renders_known_values():
    from ss4d.render_compare import compare_renders

    rgb = torch.full((2, 3, 4, 4), 0.5)
    alpha = torch.zeros(2, 4, 4)
    alpha[:, :2] = 1.0                      # 8 of 16 pixels inside
    assert compare_renders(rgb, alpha, rgb.clone(), alpha.clone()) == (math.inf, 1.0)
    other = alpha.clone()
    other[:, :, :2] = 1.0                   # 4 more pixels: union 12, intersection 8
    psnr, iou = compare_renders(rgb + 0.1, other, rgb, alpha)   # MSE 0.01 -> 20 dB
    assert math.isclose(psnr, 20.0, abs_tol=1e-4) and math.isclose(iou, 8 / 12, rel_tol=1e-6)


def test_bench_quality_on_the_tiny_pipeline(tmp_path, capsys):
    """scripts/bench_quality.py end to end (tiny random pipeline, 2 frames, two options): the default
    is identical to itself, the exact kv-cache option too, the fast preset differs; passes counted."""
    from ss4d.tiny import write_tiny_video_to_4d

    spec = importlib.util.spec_from_file_location("bench_quality", REPO / "scripts" / "bench_quality.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model = write_tiny_video_to_4d(str(tmp_path / "tiny"))
    out = tmp_path / "q.json"
    assert bench.main(["--model", model, "--frames", "2", "--only", "fast preset", "kv-cache", "--json", str(out)]) == 0
    rows = {r["option"]: r for r in json.loads(out.read_text())["clips"]["assets/dancing_robot_fg.mp4"]}
    assert list(rows) == ["default", "fast preset", "kv-cache"]
    assert rows["default"]["psnr"] == math.inf and rows["kv-cache"]["psnr"] == math.inf
    assert rows["kv-cache"]["voxel_iou"] == 1.0 and rows["kv-cache"]["calls"] == rows["default"]["calls"]
    assert rows["fast preset"]["psnr"] < 100
    # fast: 6 Heun steps a stage, batched -> 12 calls, 21 passes per stage (tiny settings: rescale_t 3, [0.5, 1])
    assert rows["fast preset"]["calls_per_stage"] == {"sparse_structure": 12, "slat": 12}
    assert "PSNR dB" in capsys.readouterr().out


def test_fp8_row_compares_renders_with_the_bf16_row(tmp_path_factory, monkeypatch):
    """The fp8 row's machinery on the CPU, with the FP8 conversion faked away (a no-op): same input,
    same seed, same weights as the bf16 default row, so the renders must be identical (inf dB); the
    flows are restored afterwards."""
    from ss4d import Pipeline
    from ss4d.tiny import write_tiny_video_to_4d

    bench = load_bench_pipeline()
    pipe = Pipeline.from_pretrained(write_tiny_video_to_4d(str(tmp_path_factory.getbasetemp() / "tiny_fp8")))
    flows = {k: pipe.models[k] for k in ("sparse_structure_flow_model", "slat_flow_model")}
    monkeypatch.setattr("ss4d.fp8.fp8_missing", lambda device: [])
    monkeypatch.setattr(Pipeline, "enable_fp8", lambda self: {"sparse_structure_flow_model": 0, "slat_flow_model": 0})
    out = bench.bench_gpu_full([2], ["bf16"], 1, [], fast=False, pipe=pipe, image_size=64, ceiling_size=64,
                               compile_backend="eager")
    rows = {r["label"]: r for r in out["rows"]}
    assert list(rows) == ["bf16 default", "bf16 mem", "bf16 mem low-vram", "bf16 default fp8", "bf16 default compile"]
    fp8 = rows["bf16 default fp8"]
    assert fp8["psnr_vs_bf16"] == math.inf and fp8["iou_vs_bf16"] == 1.0 and fp8["compared_frames"] == [0, 1]
    assert all(pipe.models[k] is m for k, m in flows.items())
    assert all("gaussians_list" not in r for r in out["rows"])
