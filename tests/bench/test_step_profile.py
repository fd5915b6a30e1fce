"""bench/step_profile.py: the categories and per-step figures on hand-built events, one real
trainer run profiled on CPU/gloo, and the refusal of a window that --max-steps cannot hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import step_profile
from mgft.contract.env import DIST_VARS, MGFT_DEVICE
from step_profile import Event

from tests.conftest import REPO


@pytest.mark.parametrize(("name", "expected"), [
    ("sm90_xmma_gemm_e4m3bf16_e4m3f32_f32_tn_n_tilesize128x128x128", "fp8 matmul"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64", "matmul"),
    # as an H100 named them in bench/fp8_layers.py --profile (cuBLAS 13)
    ("nvjet_sm90_qqtst_128x128_128x6_1x1_h_bz_coopA_algo2_ovscale_TNT", "fp8 matmul"),
    ("nvjet_sm90_tst_320x128_64x3_1x2_h_bz_coopB_TNT", "matmul"),
    ("flash_fwd_kernel", "attention"),
    ("_quantize_rows_kernel", "fp8 quantize"),
    ("_liger_cross_entropy_kernel", "fused loss"),
    ("_rms_norm_forward_kernel", "norm/rope/swiglu"),
    ("void at::native::multi_tensor_apply_kernel<FusedAdamMathFunctor>", "optimizer"),
    ("ncclDevKernel_AllReduce_Sum_bf16_RING_LL", "communication"),
    ("void at::native::vectorized_elementwise_kernel<4, FillFunctor<float>>", "copies/elementwise"),
    ("aten::addmm", "matmul"),
    ("aten::add_", "copies/elementwise"),
    ("some_custom_kernel", "other"),
])
def test_kernel_names_fall_in_the_most_specific_category(name, expected):
    assert step_profile.category(name) == expected


def test_busy_time_is_the_union_of_the_intervals_not_the_sum():
    assert step_profile.union_us([(0, 10), (5, 15), (20, 30)]) == 25
    assert step_profile.union_us([(0, 100), (10, 20)]) == 100


def test_annotations_on_the_gpu_timeline_are_not_kernels():
    """torch.profiler puts ProfilerStep#N and DDP's forward on the GPU's timeline too, each as
    long as a step: counted as kernels they made the GPU 100% busy on a launch-bound H100."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    def event(name, device, start, end, annotation):
        return SimpleNamespace(name=name, device_type=device, is_user_annotation=annotation,
                               time_range=SimpleNamespace(start=start, end=end),
                               self_cpu_time_total=end - start)

    prof = SimpleNamespace(events=lambda: [
        event("ProfilerStep#7", DeviceType.CPU, 0, 100, False),
        event("ProfilerStep#7", DeviceType.CUDA, 0, 100, True),
        event("DistributedDataParallel.forward", DeviceType.CUDA, 5, 60, True),
        event("nvjet_sm90_tst_128x128", DeviceType.CUDA, 10, 40, False)])
    summary = step_profile.summarize(step_profile.events_of(prof), 1)
    assert summary["busy_ms_per_step"] == pytest.approx(0.030)
    assert summary["kernels_per_step"] == 1


def test_cuda_summary_per_step():
    events = [
        Event("ProfilerStep#8", "cpu", 0, 1000, 10), Event("ProfilerStep#9", "cpu", 1000, 2000, 10),
        *[Event("cudaLaunchKernel", "cpu", t, t + 5, 5) for t in (50, 60, 70)],
        Event("sm90_xmma_gemm_e4m3bf16_e4m3f32_f32_tn_n", "cuda", 100, 400, 300),
        Event("flash_fwd_kernel", "cuda", 300, 500, 200),  # overlaps the gemm by 100 us
        Event("_quantize_rows_kernel", "cuda", 1100, 1200, 100),
        Event("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n", "cuda", 1200, 1600, 400),
        Event("vectorized_elementwise_kernel", "cuda", 1700, 1800, 100),
        Event("ncclDevKernel_AllReduce_Sum_bf16_RING_LL", "cuda", 1800, 1900, 100),
    ]
    s = step_profile.summarize(events, steps=2)
    # wall: the two ProfilerStep spans, 2000 us over 2 steps; kernels: 1200 us in all;
    # busy: [100, 500] + [1100, 1600] + [1700, 1900] = 400 + 500 + 200 = 1100 us.
    assert s["device"] == "cuda" and s["steps"] == 2
    assert s["wall_ms_per_step"] == pytest.approx(1.0)
    assert s["busy_ms_per_step"] == pytest.approx(0.55)
    assert s["busy_fraction"] == pytest.approx(0.55)
    assert s["kernels_per_step"] == 3 and s["launches_per_step"] == 1.5
    cats = s["categories"]
    assert list(cats) == ["fp8 matmul", "matmul", "attention", "fp8 quantize",
                          "communication", "copies/elementwise"]
    assert cats["fp8 matmul"] == pytest.approx(
        {"ms_per_step": 0.15, "share": 0.25, "count_per_step": 0.5})
    assert cats["matmul"] == pytest.approx(
        {"ms_per_step": 0.2, "share": 1 / 3, "count_per_step": 0.5})
    assert cats["attention"]["share"] == pytest.approx(1 / 6)


def test_cpu_summary_uses_self_time_of_the_operators():
    events = [Event("ProfilerStep*", "cpu", 0, 500, 400),  # the window, not an operator
              Event("aten::linear", "cpu", 10, 100, 0),
              Event("aten::addmm", "cpu", 10, 100, 30), Event("aten::mm", "cpu", 100, 160, 50),
              Event("aten::_log_softmax", "cpu", 200, 220, 20)]
    s = step_profile.summarize(events, steps=1)
    assert s["device"] == "cpu" and "busy_ms_per_step" not in s
    assert s["wall_ms_per_step"] == pytest.approx(0.5)
    assert s["categories"]["matmul"] == pytest.approx(
        {"ms_per_step": 0.08, "share": 0.8, "count_per_step": 2})
    assert s["categories"]["other"]["count_per_step"] == 2


def test_a_window_longer_than_the_run_is_refused(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--wait", "6", "--active", "3", "--",
            "--model", str(tmp_path), "--dataset", str(tmp_path / "d.jsonl"),
            "--output", str(tmp_path / "o"), "--max-steps", "10"]
    assert step_profile.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-steps >= 11" in err[0]
    assert not (tmp_path / "step_profile.json").exists()


def test_profiles_two_steps_of_a_real_cpu_run(tiny, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    env |= {"OMP_NUM_THREADS": "1", MGFT_DEVICE: "cpu", "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false"}
    out = tmp_path / "prof"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
           str(REPO / "bench" / "step_profile.py"), "--out", str(out), "--wait", "1",
           "--active", "2", "--", "--model", str(tiny.model_dir), "--dataset", str(tiny.data),
           "--output", str(tmp_path / "run"), "--max-steps", "5", "--micro-batch", "4",
           "--seq-len", "64", "--save", "none"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "step_profile.json").read_text())
    assert result["device"] == "cpu" and result["steps"] == 2 and result["active"] == 2
    assert result["categories"]["matmul"]["ms_per_step"] > 0
    assert result["wall_ms_per_step"] > 0
    assert "aten::" in (out / "step_profile.txt").read_text()
    assert "matmul" in done.stdout
